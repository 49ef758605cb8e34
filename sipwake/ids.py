"""Random identifiers (tags, branches, push and park ids, nonces) from the OS's
randomness, drawn 4 KiB at a time: one system call per few hundred ids instead of one
each. Every system call on the event loop is a moment the store's thread may take the
GIL, so fewer of them means fewer stalls. For the event loop's thread only."""

from __future__ import annotations

import base64
import os

_POOL_SIZE = 4096
_pool = b""
_used = 0  # bytes of _pool handed out (an offset: slicing off the rest copied it each time)


def random_bytes(n: int) -> bytes:
    global _pool, _used
    if _used + n > len(_pool):
        _pool, _used = os.urandom(max(_POOL_SIZE, n)), 0
    _used += n
    return _pool[_used - n : _used]


def random_hex(n: int) -> str:
    """2n hex digits of n random bytes (secrets.token_hex)."""
    return random_bytes(n).hex()


def random_urlsafe(n: int) -> str:
    """n random bytes, base64url without padding (secrets.token_urlsafe)."""
    return base64.urlsafe_b64encode(random_bytes(n)).rstrip(b"=").decode("ascii")


def random_uuid() -> str:
    """A version 4 UUID (str(uuid.uuid4())), formatted here: uuid.UUID's checks and
    int arithmetic cost a few µs, and every push draws one."""
    b = bytearray(random_bytes(16))
    b[6] = b[6] & 0x0F | 0x40  # version 4
    b[8] = b[8] & 0x3F | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
