"""What a MESSAGE body says: the text a preview shows, and for `message/cpim`
(RFC 3862, as RCS clients send) the envelope's sender and IMDN Message-ID (RFC 5438).

    From: "Alice" <sip:alice@example.com>       message headers
    To: <sip:bob@example.com>
    NS: imdn <urn:ietf:params:imdn>
    imdn.Message-ID: 34jk324j
                                                blank line
    Content-Type: text/plain; charset=utf-8     content headers
                                                blank line
    Hello                                       content

The body itself is never changed: it is stored and delivered byte for byte.
Nothing here raises on hostile input; what cannot be read is left out.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from dataclasses import dataclass

from sipwake.sip.errors import SipParseError
from sipwake.sip.uri import URI, NameAddr

CPIM = "message/cpim"
IMDN_NS = "urn:ietf:params:imdn"
IMDN_REPORT = "message/imdn+xml"  # delivery / display notifications (RFC 5438)
IS_COMPOSING = "application/im-iscomposing+xml"  # typing indications (RFC 3994)
MAX_HEADER_BYTES = 8192  # a CPIM envelope larger than this is not read for headers

# What a preview says for content that is not text.
LABELS = {
    "image": "Image",
    "video": "Video",
    "audio": "Audio message",
    "application/vnd.gsma.rcs-ft-http+xml": "File",
    "application/vnd.gsma.rcspushlocation+xml": "Location",
    "text/vcard": "Contact",
    "text/x-vcard": "Contact",
}
GENERIC = "Attachment"


@dataclass(frozen=True, slots=True)
class Content:
    text: str  # for the preview: the whole text, or a label; "" for a delivery report
    media_type: str  # of the message itself (inside CPIM), lower-case, no parameters
    sender_uri: str = ""  # CPIM From, when present and not anonymous
    sender_name: str = ""  # CPIM From display name
    imdn_id: str = ""  # RFC 5438 Message-ID
    silent: bool = False  # a delivery report: stored and delivered, never pushed
    transient: bool = False  # a typing indication: forwarded when possible, never stored


def parse_content(content_type: str, body: bytes) -> Content:
    """Read a MESSAGE body of the given SIP Content-Type."""
    media, params = split_media_type(content_type or "text/plain")
    if media != CPIM:
        return Content(_text(media, params, body), media, transient=media == IS_COMPOSING,
                       silent=media == IMDN_REPORT)
    headers, rest = _split_block(body)
    if any(name.lower() == "content-type" for name, _ in headers) and not _has(headers, "From"):
        headers, rest = _split_block(rest)  # an e-mail style MIME wrapper: skip it
    content_headers, inner = _split_block(rest)
    inner_type = _get(content_headers, "Content-Type") or "text/plain"
    inner_media, inner_params = split_media_type(inner_type)
    encoding = (_get(content_headers, "Content-Transfer-Encoding") or "").strip().lower()
    if encoding == "base64":
        try:
            inner = base64.b64decode(inner, validate=False)
        except (binascii.Error, ValueError):
            inner = b""
    sender_uri, sender_name = _sender(_get(headers, "From"))
    return Content(
        text=_text(inner_media, inner_params, inner),
        media_type=inner_media,
        sender_uri=sender_uri,
        sender_name=sender_name,
        imdn_id=_imdn_message_id(headers),
        silent=inner_media == IMDN_REPORT,
        transient=inner_media == IS_COMPOSING,
    )


def split_media_type(value: str) -> tuple[str, dict[str, str]]:
    """`text/plain; charset="UTF-8"` → ("text/plain", {"charset": "UTF-8"})."""
    media, *rest = value.split(";")
    params: dict[str, str] = {}
    for part in rest:
        name, eq, v = part.partition("=")
        if eq:
            params[name.strip().lower()] = v.strip().strip('"')
    return media.strip().lower(), params


def number_of(uri_text: str) -> str:
    """The number or user part to show: `sip:+4930123@x;user=phone` → `+4930123`,
    `tel:+4930123;phone-context=…` → `+4930123`."""
    try:
        uri = URI.parse(uri_text)
    except SipParseError:
        return ""
    if uri.is_sip:
        return uri.user.split(";")[0]
    opaque = uri.opaque.split(";")[0]
    return opaque.split("@")[0] if "@" in opaque else opaque


def _text(media: str, params: dict[str, str], body: bytes) -> str:
    if media == IMDN_REPORT or media == IS_COMPOSING:
        return ""
    if media == "text/plain":
        return _decode(body, params.get("charset", "utf-8"))
    major = media.split("/")[0]
    return LABELS.get(media) or LABELS.get(major) or GENERIC


def _decode(body: bytes, charset: str) -> str:
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return body.decode(charset, errors="replace")


Headers = list[tuple[str, str]]


def _split_block(data: bytes) -> tuple[Headers, bytes]:
    """Header lines up to the first blank line, and what follows it."""
    end, sep = data.find(b"\r\n\r\n"), 4
    bare = data.find(b"\n\n")
    if end < 0 or 0 <= bare < end:
        end, sep = bare, 2
    if end < 0:
        head, rest = data, b""
    else:
        head, rest = data[:end], data[end + sep :]
    headers: Headers = []
    for line in head[:MAX_HEADER_BYTES].decode("utf-8", errors="replace").splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip():
            # "Subject;lang=fr: …": header parameters ride on the name (RFC 3862 §3.3)
            headers.append((name.split(";")[0].strip(), value.strip()))
    return headers, rest


def _has(headers: Headers, name: str) -> bool:
    return _get(headers, name) is not None


def _get(headers: Headers, name: str) -> str | None:
    lower = name.lower()
    for n, v in headers:
        if n.lower() == lower:
            return v
    return None


def _imdn_message_id(headers: Headers) -> str:
    """`<prefix>.Message-ID`, where `NS: <prefix> <urn:ietf:params:imdn>` (RFC 5438 §6.3)."""
    prefixes = set()
    for name, value in headers:
        if name.lower() == "ns":
            prefix, _, urn = value.partition("<")
            if urn.rstrip(">").strip().lower() == IMDN_NS:
                prefixes.add(prefix.strip().lower())
    for name, value in headers:
        prefix, dot, local = name.rpartition(".")
        if dot and local.lower() == "message-id" and prefix.lower() in prefixes:
            return value[:256]
    return ""


def _sender(value: str | None) -> tuple[str, str]:
    """CPIM `From: Name <uri>` → (uri, name); ("", name) when anonymous or unreadable."""
    if not value:
        return "", ""
    try:
        addr = NameAddr.parse(value)
    except SipParseError:
        return "", ""
    uri = addr.uri
    name = addr.display.strip('"')
    text = uri.aor() if uri.is_sip else str(uri)
    if "anonymous.invalid" in text.lower() or (uri.is_sip and uri.user.lower() == "anonymous"):
        return "", name  # RFC 3862 / RCS: the sender chose not to say who it is
    return text, name
