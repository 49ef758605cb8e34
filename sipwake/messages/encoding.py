"""`Content-Encoding` on a MESSAGE (RFC 3261 §20.12): gzip and deflate, as linphone
sends its delivery reports. The body is stored and delivered as it came, encoding
and all; only what we read from it (preview, CPIM envelope, IMDN id) is decoded,
and never to more than a bound, so a small compressed body can't fill memory."""

from __future__ import annotations

import zlib

ACCEPTED = ("gzip", "deflate")  # besides identity
ACCEPT_ENCODING = "gzip, deflate, identity"


class UnsupportedEncoding(ValueError):
    """An encoding we can't read: 415 with Accept-Encoding."""


class BadEncoding(ValueError):
    """The body does not decode as its encoding says: 400."""


class DecodedTooLarge(ValueError):
    """Decoded, the body is over the limit: 413."""


def content_encoding(header: str | None) -> str:
    """The one encoding a body carries ("" for none/identity)."""
    value = (header or "").strip().lower()
    if value in ("", "identity"):
        return ""
    if value not in ACCEPTED:
        raise UnsupportedEncoding(value)
    return value


def decode(encoding: str, body: bytes, limit: int) -> bytes:
    """`body` with its `encoding` undone, at most `limit` bytes of it."""
    if not encoding:
        return body
    # deflate is meant to be zlib-wrapped (RFC 9110 §8.4.1.2); some send it raw
    attempts = [16 + zlib.MAX_WBITS] if encoding == "gzip" else [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise DecodedTooLarge(f"over {limit} bytes once decoded")
        if inflater.eof:
            return out
    raise BadEncoding(f"body is not valid {encoding}")
