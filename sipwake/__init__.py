"""sipwake: keeps a mobile dialer reachable while its app sleeps."""

from sipwake import speedups

speedups.choose(__path__)  # compiled hot path, or pure Python: before any of it loads
