"""Free ports on 127.0.0.1 for servers started in another process (which can't be
asked to bind port 0 and tell us), e.g. `sipwake serve` from a config file."""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out for `kind` (SOCK_STREAM or SOCK_DGRAM); free
    again once returned, so there is a small window in which another process may take it."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
