"""Retention: the call log, the push log and revoked tokens are purged by age, in
chunks, on SQLite and PostgreSQL; what is younger stays."""

from __future__ import annotations

import pytest

from sipwake import retention
from sipwake.retention import DAY, Retention
from sipwake.store import Store
from sipwake.store.models import CallRecord, PushAttempt

NOW = 1_800_000_000.0


def call(call_id: str, age_days: float) -> CallRecord:
    return CallRecord(call_id, "sip:alice@example.com", "sip:bob@example.com", "bob", "Bob",
                      NOW - age_days * DAY)


def attempt(age_days: float) -> PushAttempt:
    return PushAttempt("dev-1", "call", "apns", "p", 1, 200, "delivered", at=NOW - age_days * DAY)


async def test_old_rows_go_young_rows_stay(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "CHUNK", 3)  # several chunks for a few rows
    for i in range(7):
        await store.put_call(call(f"old-{i}", 91))
    await store.put_call(call("young", 89))
    for _ in range(5):
        await store.add_push_attempt(attempt(8))
    await store.add_push_attempt(attempt(6))
    await store.revoke_token("expired", NOW - 1)
    await store.revoke_token("live", NOW + 3600)

    gone = await Retention(store, call_days=90, push_days=7, clock=lambda: NOW).purge()
    assert gone == {"call_log": 7, "push_attempts": 5, "revoked_tokens": 1}
    assert [c.call_id for c in await store.calls("sip:alice@example.com")] == ["young"]
    assert len(await store.push_attempts("dev-1")) == 1
    assert await store.token_revoked("live") and not await store.token_revoked("expired")
    # 0 days: kept for ever
    kept = Retention(store, call_days=0, push_days=0, clock=lambda: NOW + 999 * DAY)
    assert (await kept.purge())["call_log"] == 0
