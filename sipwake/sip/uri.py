"""SIP URIs, name-addr values and Via values (RFC 3261 §19.1, §20, §25.1).

Parsing is forgiving where real phones are sloppy (case, whitespace) and strict where a
mistake would misroute a request (missing host, bad port). Every failure raises
SipParseError, which the transport turns into 400 Bad Request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sipwake.sip.errors import SipParseError

_SCHEMES: Final = ("sip", "sips")
_BAD_HOST: Final = re.compile(r'[ \t<>"@]')
# "SIP/2.0/UDP " with the optional whitespace RFC 4475 wsinv shows
_VIA_PROTO: Final = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+", re.I)
_TRANSPORTS: Final = frozenset(("UDP", "TCP", "TLS", "WS", "WSS", "SCTP", "TLS-SCTP"))


def _split_params(text: str, sep: str = ";") -> dict[str, str | None]:
    """`a=1;b;c="x;y"` → {"a": "1", "b": None, "c": '"x;y"'}; names lower-cased."""
    params: dict[str, str | None] = {}
    for part in split_unquoted(text, sep):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError(f"empty parameter name in {text!r}")
        params[name] = value.strip() if eq else None
    return params


def _format_params(params: dict[str, str | None], sep: str = ";") -> str:
    return "".join(sep + k if v is None else f"{sep}{k}={v}" for k, v in params.items())


_SPECIAL: Final = {sep: re.compile(f'[{sep}"<]') for sep in (",", ";")}
# what a quoted-string holds only as a quoted-pair: the quote, the backslash, and the
# control characters a display name may carry that way (RFC 4475 intmeth)
_NEEDS_ESCAPE: Final = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_QUOTED: Final = re.compile(r'"(?:\\.|[^"\\])*"')


def split_unquoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes and angle brackets (header lists, params)."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    special = _SPECIAL.get(sep) or re.compile(f'[{re.escape(sep)}"<]')
    parts: list[str] = []
    start = pos = 0
    while True:
        m = special.search(text, pos)
        if m is None:
            break
        ch, i = m.group(), m.start()
        if ch == sep:
            parts.append(text[start:i])
            start = pos = i + 1
        elif ch == '"':
            q = _QUOTED.match(text, i)
            if q is None:
                raise SipParseError(f"unterminated quoted string in {text[:80]!r}")
            pos = q.end()
        else:  # "<": jump to its ">" (URIs hold ";" and "," of their own)
            gt = text.find(">", i)
            pos = len(text) if gt < 0 else gt + 1
    parts.append(text[start:])
    return parts


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    if not text:
        raise SipParseError(f"missing host in {what}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference in {what}")
        host = text[: end + 1]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 host in {what}")
        port_text = rest[1:] if rest else ""
    else:
        host, colon, port_text = text.partition(":")
        if colon and not port_text:
            raise SipParseError(f"empty port in {what}")
    if not host or _BAD_HOST.search(host):
        raise SipParseError(f"bad host {host!r} in {what}")
    port: int | None = None
    if port_text:
        # ASCII digits: isdigit() also takes "²" (which int() refuses) and "٣" (which it reads)
        if not (port_text.isdigit() and port_text.isascii()) or not 0 < int(port_text) < 65536:
            raise SipParseError(f"bad port {port_text!r} in {what}")
        port = int(port_text)
    return host.lower(), port


@dataclass(slots=True, init=False)
class URI:
    """A sip:/sips: URI, or any other absolute URI kept opaque (tel:, urn:...)."""

    scheme: str
    user: str
    password: str
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: str  # "?a=b&c=d", kept raw: only ever copied
    opaque: str  # the part after "scheme:" for non-SIP schemes

    def __init__(
        self,
        scheme: str,
        user: str = "",
        password: str = "",
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str = "",
        opaque: str = "",
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = headers
        self.opaque = opaque

    @classmethod
    def parse(cls, text: str) -> URI:
        # The same URIs come back again and again (the registrar's domain, a phone's
        # AOR and Contact in its challenged and authenticated REGISTER): a copy of an
        # earlier parse is a fifth of the work. Copies, because callers change them.
        known = _PARSED.get(text)
        if known is not None:
            return known.copy()
        uri = cls._parse(text)
        if len(text) > _PARSED_TEXT_MAX:
            return uri  # text is attacker-chosen: only short ones are kept
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()  # and only so many, crudely
        _PARSED[text] = uri.copy()
        return uri

    def copy(self) -> URI:
        """One to change: its params are its own."""
        return URI(self.scheme, self.user, self.password, self.host, self.port,
                   dict(self.params), self.headers, self.opaque)  # fmt: skip

    @classmethod
    def _parse(cls, text: str) -> URI:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or not scheme or not scheme.isascii() or not scheme[0].isalpha():
            raise SipParseError(f"bad URI {text!r}")
        if scheme not in _SCHEMES:
            if not rest or any(c in rest for c in " \t<>"):
                raise SipParseError(f"bad URI {text!r}")
            return cls(scheme=scheme, opaque=rest)
        rest, _, headers = rest.partition("?")
        user = password = ""
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, _, password = userinfo.partition(":")
            if not user:
                raise SipParseError(f"empty user in {text!r}")
        hostport, _, param_text = rest.partition(";")
        host, port = _parse_hostport(hostport, text)
        params = _split_params(param_text) if param_text else {}
        return cls(scheme, user, password, host, port, params, "?" + headers if headers else "")

    @property
    def is_sip(self) -> bool:
        return self.scheme in _SCHEMES

    @property
    def secure(self) -> bool:
        """Reached over TLS: a sips: URI or transport=tls (default port 5061)."""
        return self.scheme == "sips" or (self.params.get("transport") or "").lower() == "tls"

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def aor(self) -> str:
        """Address-of-record form: scheme, user and host only (RFC 3261 §10.3 step 5)."""
        if not self.is_sip:
            return str(self)
        return f"sip:{self.user}@{self.host}" if self.user else f"sip:{self.host}"

    def __str__(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        userinfo = ""
        if self.user:
            userinfo = self.user + (":" + self.password if self.password else "") + "@"
        return f"{self.scheme}:{userinfo}{self.hostport}{_format_params(self.params)}{self.headers}"


_PARSED: Final[dict[str, URI]] = {}
_PARSED_MAX: Final = 4096
_PARSED_TEXT_MAX: Final = 256  # at most ~1 MiB of cached text


@dataclass(slots=True, init=False)
class NameAddr:
    """`"Display" <uri>;params` or a bare addr-spec (From, To, Contact, Route...)."""

    uri: URI
    display: str  # unquoted, unescaped
    params: dict[str, str | None]
    star: bool  # Contact: *

    def __init__(
        self,
        uri: URI,
        display: str = "",
        params: dict[str, str | None] | None = None,
        star: bool = False,
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        self.uri = uri
        self.display = display
        self.params = {} if params is None else params
        self.star = star

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        # From, To and Contact come back as they were too: a phone's challenged and
        # authenticated REGISTER, its refreshes, every call to one user's To. A copy of
        # an earlier parse, as for URIs (callers change what they get).
        known = _NAME_ADDRS.get(text)
        if known is not None:
            return known.copy()
        parsed = cls._parse(text)
        if len(text) <= _NAME_ADDR_TEXT_MAX:
            if len(_NAME_ADDRS) >= _PARSED_MAX:
                _NAME_ADDRS.clear()
            _NAME_ADDRS[text] = parsed.copy()
        return parsed

    def copy(self) -> NameAddr:
        """One to change: its params and URI are its own."""
        return NameAddr(self.uri.copy(), self.display, dict(self.params), self.star)

    @classmethod
    def _parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if text == "*":
            return cls(URI("sip"), star=True)
        display = ""
        if text.startswith('"'):
            i = 1
            chars: list[str] = []
            while i < len(text):
                ch = text[i]
                if ch == "\\" and i + 1 < len(text):
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    break
                chars.append(ch)
                i += 1
            else:
                raise SipParseError(f"unterminated display name in {text!r}")
            display = "".join(chars)
            text = text[i + 1 :].lstrip()
            if not text.startswith("<"):
                raise SipParseError("quoted display name without <uri>")
        lt = text.find("<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"missing '>' in {text!r}")
            if not display:
                display = text[:lt].strip()
            uri = URI.parse(text[lt + 1 : gt])
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SipParseError(f"junk after <uri> in {text!r}")
        else:
            # addr-spec: parameters after the URI belong to the header, not the URI
            uri_text, _, rest = text.partition(";")
            if "?" in uri_text or "," in uri_text:
                raise SipParseError(f"addr-spec needs <> around {text!r}")
            uri = URI.parse(uri_text)
            rest = ";" + rest if rest else ""
        params = _split_params(rest[1:]) if rest else {}
        return cls(uri, display, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.star:
            return "*"
        display = ""
        if self.display:
            escaped = _NEEDS_ESCAPE.sub(r"\\\g<0>", self.display)  # quoted-pairs, §25.1
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_format_params(self.params)}"


_NAME_ADDRS: Final[dict[str, NameAddr]] = {}
_NAME_ADDR_TEXT_MAX: Final = 512  # a Contact with RFC 8599 parameters: ~250; at most ~2 MiB


@dataclass(slots=True, init=False)
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None,
        params: dict[str, str | None] | None = None,
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params

    @classmethod
    def parse(cls, text: str) -> Via:
        text = text.strip()
        # "SIP/2.0/UDP host" as nearly everyone writes it, without the regex
        space = text.find(" ", 8)
        transport = text[8:space] if space > 8 and text.startswith("SIP/2.0/") else ""
        if transport in _TRANSPORTS:
            rest = text[space + 1 :]
        else:
            m = _VIA_PROTO.match(text)
            if m is None:
                raise SipParseError(f"bad Via {text[:60]!r}")
            transport, rest = m.group(1).upper(), text[m.end() :]
        sent_by, _, param_text = rest.strip().partition(";")
        host, port = _parse_hostport(sent_by.strip(), "Via")
        params = _split_params(param_text) if param_text else {}
        return cls(transport, host, port, params)

    @property
    def branch(self) -> str:
        return self.params.get("branch") or ""

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_format_params(self.params)}"
