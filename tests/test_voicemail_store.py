"""Voicemail state in the store (migration 3), on SQLite and PostgreSQL, across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwake.store import open_store
from sipwake.store.models import Mailbox


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str) -> str:
    return f"sqlite:///{tmp_path}/vm.db" if request.param == "sqlite" else pg_url


async def test_mailbox_round_trip_and_upsert(url: str) -> None:
    store = await open_store(url)
    try:
        assert await store.get_mailbox("sip:alice@example.com") is None
        mailbox = Mailbox("sip:alice@example.com", waiting=True, account="sip:vm@example.com",
                          new_count=2, old_count=2**31 - 1, urgent_new=1, urgent_old=0,
                          last_from_uri="sip:bob@example.com", last_from_name="Bøb 🎙",
                          last_duration=42, last_at=1764180000.5, updated_at=1764180001.25)
        await store.put_mailbox(mailbox)
        assert await store.get_mailbox("sip:alice@example.com") == mailbox
        mailbox.waiting, mailbox.new_count = False, 0
        await store.put_mailbox(mailbox)  # replaces by aor
        got = await store.get_mailbox("sip:alice@example.com")
        assert got == mailbox and got is not None and got.waiting is False
        assert await store.get_mailbox("sip:bob@example.com") is None
        assert 3 in await store.applied_migrations()  # type: ignore[attr-defined]
    finally:
        await store.close()
    store = await open_store(url)  # a restart: the state is still there
    try:
        assert await store.get_mailbox("sip:alice@example.com") == mailbox
    finally:
        await store.close()
