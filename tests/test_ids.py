"""Pooled random identifiers: unique across refills, in the expected shapes."""

from __future__ import annotations

import re
import uuid

from sipwake import ids
from sipwake.sip.transaction import COOKIE, new_branch, new_tag


def test_ids_are_unique_across_pool_refills() -> None:
    drawn = [ids.random_hex(8) for _ in range(3000)]  # 24 KiB: six refills
    assert len(set(drawn)) == len(drawn)
    assert all(re.fullmatch(r"[0-9a-f]{16}", d) for d in drawn)


def test_shapes() -> None:
    for _ in range(300):  # formatted by hand: uuid's own canonical text, version 4
        text = ids.random_uuid()
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 4 and u.variant == uuid.RFC_4122
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", ids.random_urlsafe(12))
    assert len(ids.random_bytes(5000)) == 5000  # more than a pool's worth
    assert new_branch().startswith(COOKIE) and len(new_branch()) == len(COOKIE) + 16
    assert re.fullmatch(r"[0-9a-f]{12}", new_tag())
