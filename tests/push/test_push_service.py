"""Push service behaviour independent of the provider: sink, skips, the push log."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sipwake.push import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    PushService,
    PushSink,
    RetryPolicy,
    VoicemailNotification,
)
from sipwake.push.notification import DEFAULT_TTL
from sipwake.store.models import PushAttempt
from sipwake.testing import ManualScheduler
from tests.helpers.clock import Sleeps
from tests.helpers.push import MemoryPushLog, android_device, ios_device


def call(ttl: float = 30) -> CallNotification:
    return CallNotification(call_id="park-1", caller_uri="sip:bob@example.com",
                            caller_number="+15551234", caller_name="Bob",
                            pickup_uri="sip:pickup@example.com",
                            expires_at=int(time.time() + ttl))


async def test_without_providers_pushes_go_to_the_sink(store: MemoryPushLog) -> None:
    service = PushService(store)
    assert service.sink is not None
    results = await service.send_all(
        [ios_device(), ios_device("alert-phone", mode="alert"), android_device()], call())
    assert [r.outcome for r in results] == ["delivered"] * 3
    assert all(r.provider == "sink" for r in results)
    pushes = service.sink.pushes()
    json.dumps(pushes)  # JSON-able, for GET /v1/dev/pushes
    android, alert, voip = pushes  # newest first
    assert voip["provider"] == "apns" and voip["headers"]["apns-push-type"] == "voip"
    assert voip["headers"]["apns-topic"] == "com.example.dialer.voip"
    assert voip["payload"]["caller_name"] == "Bob"
    assert "authorization" not in voip["headers"]
    assert alert["payload"]["aps"]["category"] == "INCOMING_CALL"
    assert android["provider"] == "fcm"
    assert android["payload"]["android"]["priority"] == "HIGH"
    assert android["payload"]["data"]["expires_at"].isdigit()
    assert [a.provider for a in store.attempts] == ["sink"] * 3
    assert service.sink.pushes(limit=1, device_id="iphone") == [voip]


async def test_sink_ring_is_bounded() -> None:
    sink = PushSink(capacity=3)
    service = PushService(MemoryPushLog(), sink=sink)
    for _ in range(10):
        await service.send(android_device(), call())
    assert len(sink.pushes()) == 3


async def test_device_of_an_unconfigured_provider_is_skipped(store: MemoryPushLog) -> None:
    class Never:
        name = "apns"

        def prepare(self, *args: Any) -> Any:
            raise AssertionError("not for this device")

    service = PushService(store, apns=Never())  # type: ignore[arg-type]
    result = await service.send(android_device(), call())
    assert (result.outcome, result.reason) == ("skipped", "no fcm provider configured")
    assert store.attempts[0].attempt == 0


async def test_disabled_device_is_skipped_and_logged(store: MemoryPushLog) -> None:
    service = PushService(store)
    result = await service.send(ios_device(enabled=False), call())
    assert result.outcome == "skipped" and result.reason == "device disabled"
    assert service.sink is not None and service.sink.pushes() == []
    assert store.attempts[0].outcome == "skipped"


async def test_a_broken_push_log_does_not_stop_pushes() -> None:
    class Broken(MemoryPushLog):
        async def add_push_attempt(self, attempt: PushAttempt) -> None:
            raise RuntimeError("disk full")

    service = PushService(Broken())
    assert (await service.send(android_device(), call())).outcome == "delivered"


async def test_attempts_are_capped() -> None:
    clock = ManualScheduler(time.time())
    sleeps = Sleeps(clock)

    class Flaky:
        name = "fcm"
        calls = 0

        def prepare(self, device: Any, n: Any, now: float, push_id: str = "") -> Any:
            from sipwake.push.provider import PreparedPush
            return PreparedPush("fcm", device.device_id, n.kind, "id", {}, {}, b"")

        async def attempt(self, push: Any, time_left: float | None = None) -> Any:
            from sipwake.push.provider import AttemptResult
            self.calls += 1
            return AttemptResult(503, "retry", "UNAVAILABLE")

        async def close(self) -> None:
            pass

    provider = Flaky()
    service = PushService(MemoryPushLog(), fcm=provider,  # type: ignore[arg-type]
                          retry=RetryPolicy(max_attempts=4), clock=clock.time, sleep=sleeps,
                          rand=lambda: 1.0)
    n = MessageNotification(message_id="m", from_uri="sip:b@x", from_number="1", from_name="B",
                            body="hi", unread=1, deadline=clock.time() + 86400)
    result = await service.send(android_device(), n)
    assert (result.outcome, result.attempts, provider.calls) == ("failed", 4, 4)
    assert sleeps.seen == pytest.approx([0.5, 1.0, 2.0])


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    assert [policy.delay(a, None, 1.0) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(3, None, 0.0) == 2.0  # jitter: between half and all of it
    assert policy.delay(1, 30.0, 0.5) == 30.0  # Retry-After wins when longer


def test_notification_defaults_and_validation() -> None:
    before = time.time()
    cancelled = CallCancelledNotification(call_id="p", reason="declined")
    assert before + DEFAULT_TTL["call_cancelled"] <= cancelled.deadline <= time.time() + 60
    assert call().deadline == float(call().expires_at)
    with pytest.raises(ValueError):
        CallCancelledNotification(call_id="p", reason="bored")
    with pytest.raises(ValueError):
        VoicemailNotification(from_uri="", from_name="", duration=-1, new=0, old=0)
    with pytest.raises(ValueError):
        MessageNotification(message_id="m", from_uri="u", from_number="", from_name="",
                            body="", unread=True)  # type: ignore[arg-type]
    long_conversation = MessageNotification(message_id="m", from_uri="sip:" + "x" * 100,
                                            from_number="", from_name="", body="", unread=0)
    assert len(long_conversation.collapse_key) == 64
    assert long_conversation.collapse(privacy=True) != long_conversation.collapse_key


async def test_no_attempt_starts_after_the_deadline_even_after_a_slow_one() -> None:
    clock = ManualScheduler(time.time())

    class Slow:
        name = "fcm"
        calls = 0

        def prepare(self, device: Any, n: Any, now: float, push_id: str = "") -> Any:
            from sipwake.push.provider import PreparedPush
            return PreparedPush("fcm", device.device_id, n.kind, "id", {}, {}, b"")

        async def attempt(self, push: Any, time_left: float | None = None) -> Any:
            from sipwake.push.provider import AttemptResult
            self.calls += 1
            clock.advance(20)  # the request took 20 s and the credential was refused
            return AttemptResult(401, "reauth", "UNAUTHENTICATED")

        async def reauthorize(self, stale: object) -> None:
            pass

    provider = Slow()
    store = MemoryPushLog()
    service = PushService(store, fcm=provider, clock=clock.time,  # type: ignore[arg-type]
                          sleep=Sleeps(clock))
    result = await service.send(android_device(), CallNotification(
        call_id="p", caller_uri="", caller_number="", caller_name="", pickup_uri="",
        expires_at=int(clock.time() + 10)))
    assert (result.outcome, result.attempts, provider.calls) == ("expired", 1, 1)
    assert [a.outcome for a in store.attempts] == ["retry", "expired"]
