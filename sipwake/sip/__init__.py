"""The SIP core: parser, transactions, transports (compiled where built: speedups.py)."""

from __future__ import annotations

from sipwake import speedups


def parser() -> str:
    """Which variant of the hot path runs: "compiled (mypyc)" or "pure Python (why)"."""
    return speedups.running()
