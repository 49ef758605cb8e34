"""The iOS badge: unread messages plus new voicemails, never failing the push."""

from __future__ import annotations

import pytest

from sipwake.badge import badge
from sipwake.store.models import InboxMessage, Mailbox
from sipwake.store.sqlite import SQLiteStore

BOB = "sip:bob@example.com"


class BrokenMailboxes(SQLiteStore):
    async def get_mailbox(self, aor: str) -> Mailbox | None:
        raise RuntimeError("mailbox table unavailable")


def message(n: int) -> InboxMessage:
    return InboxMessage(
        id=0, aor=BOB, dedup_key=f"k{n}", from_uri="sip:alice@example.com", from_name="",
        content_type="text/plain", body=b"hi", received_at=float(n),
    )  # fmt: skip


async def test_badge_adds_unread_messages_and_new_voicemails() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    try:
        assert await badge(store, BOB) == 0
        for n in range(3):
            await store.add_message(message(n))
        await store.put_mailbox(Mailbox(aor=BOB, new_count=2, old_count=5))
        assert await badge(store, BOB) == 5
        assert await badge(store, BOB, unread=1) == 3  # the caller's own count is used
        assert await badge(store, BOB, new_voicemails=0) == 3
    finally:
        await store.close()


async def test_a_count_that_cannot_be_read_counts_zero(caplog: pytest.LogCaptureFixture) -> None:
    store = BrokenMailboxes(":memory:")
    await store.open()
    try:
        await store.add_message(message(1))
        assert await badge(store, BOB) == 1
        assert "voicemail count of sip:bob@example.com for the badge failed" in caplog.text
    finally:
        await store.close()
