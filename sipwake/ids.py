"""Random identifiers (tags, branches, push and park ids, nonces) from the OS's
randomness, drawn 4 KiB at a time: one system call per few hundred ids instead of one
each. Every system call on the event loop is a moment the store's thread may take the
GIL, so fewer of them means fewer stalls. For the event loop's thread only."""

from __future__ import annotations

import base64
import os
import uuid

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
    """A version 4 UUID (uuid.uuid4)."""
    return str(uuid.UUID(bytes=random_bytes(16), version=4))
