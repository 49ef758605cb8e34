"""The push outbox: a push accepted for sending is retried until it is delivered, refused
for good or its time to live ends, across provider outages and restarts, and a provider
that comes back gets the backlog at a bounded rate. Time is the fake clock: a two-minute
outage takes milliseconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sipwake.metrics import Metrics
from sipwake.push import CallNotification, MessageNotification, RetryPolicy
from sipwake.push.notification import from_json, to_json
from sipwake.store import open_store
from sipwake.store.models import Device, OutboxPush
from sipwake.testing import ManualScheduler
from tests.helpers.apns_standin import Reply
from tests.helpers.clock import Sleeps
from tests.helpers.fcm_standin import FCMReply
from tests.helpers.push import MemoryPushLog, android_device, ios_device
from tests.helpers.wait import wait_for

ALERT = "a" * 64


def message(clock: ManualScheduler, ttl: float = 24 * 3600, message_id: str = "m1") -> MessageNotification:
    return MessageNotification(message_id=message_id, from_uri="sip:bob@example.com",
                               from_number="+15551234", from_name="Bob", body="hello",
                               unread=1, badge=1, deadline=clock.time() + ttl)


def call(clock: ManualScheduler, ttl: float = 30) -> CallNotification:
    return CallNotification(call_id="park-1", caller_uri="sip:bob@example.com",
                            caller_number="+15551234", caller_name="Bob",
                            pickup_uri="sip:pickup@example.com", expires_at=int(clock.time() + ttl))


def outage(sleeps: Sleeps, until: float,
           end: Callable[[], None]) -> Callable[[float], Awaitable[None]]:
    """The service's sleep: the fake clock's, and the outage ends at `until`."""
    ended = False

    async def sleep(seconds: float) -> None:
        nonlocal ended
        await sleeps(seconds)
        if not ended and sleeps.scheduler.time() >= until:
            ended = True
            end()

    return sleep


async def _empty(pending: Awaitable[list[Any]]) -> bool:
    return not await pending


async def never(seconds: float) -> None:
    """A sleep that never ends: a push's retry stays pending (until a stop)."""
    await asyncio.Event().wait()


# -- outages ---------------------------------------------------------------------------------

async def test_outage_longer_than_the_old_eight_attempts_then_delivered_once(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps, store: MemoryPushLog) -> None:
    server = await apns_server()
    t0 = clock.time()
    server.down = True  # every connection refused for two minutes

    def end() -> None:
        server.down = False

    service, _ = apns_push(server, service_options={"sleep": outage(sleeps, t0 + 120, end)})
    async with asyncio.timeout(10):
        result = await service.send(ios_device(), message(clock))
    assert result.delivered and result.attempts > 8
    assert clock.time() >= t0 + 120
    assert server.on_wire(ALERT) == 1 and len(server.delivered()) == 1
    outcomes = [a.outcome for a in store.attempts]
    assert outcomes == ["retry"] * (result.attempts - 1) + ["delivered"]
    assert max(sleeps.seen) <= 60  # capped backoff
    assert service.outbox_size == 0


async def test_fcm_429_with_retry_after_for_two_minutes_then_delivered_once(
        fcm_server: Any, fcm_push: Any, clock: ManualScheduler, sleeps: Sleeps, store: MemoryPushLog) -> None:
    server = await fcm_server()
    t0 = clock.time()
    server.always("fcm-token-1", FCMReply("QUOTA_EXCEEDED", retry_after="5"))

    def end() -> None:
        server.sticky.clear()

    service, _ = fcm_push(server, service_options={"sleep": outage(sleeps, t0 + 120, end)})
    async with asyncio.timeout(10):
        result = await service.send(android_device(), message(clock))
    assert result.delivered and result.attempts > 8
    assert all(s >= 5 for s in sleeps.seen)  # Retry-After honoured
    assert len(server.delivered("fcm-token-1")) == 1
    assert [s.status for s in server.sends].count(429) == result.attempts - 1
    assert server.violations == []


async def test_short_ttl_expires_during_the_outage_and_is_never_delivered(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps, store: MemoryPushLog) -> None:
    server = await apns_server()
    t0 = clock.time()
    server.down = True

    def end() -> None:
        server.down = False

    service, _ = apns_push(server, service_options={"sleep": outage(sleeps, t0 + 120, end)})
    n = message(clock, ttl=60)
    async with asyncio.timeout(10):
        result = await service.send(ios_device(), n)
    assert result.outcome == "expired"
    assert clock.time() < n.deadline  # given up before sleeping past it
    assert store.attempts[-1].outcome == "expired"
    await asyncio.sleep(0.05)
    assert server.wire == [] and service.outbox_size == 0


async def test_backlog_drains_at_a_bounded_rate_when_the_provider_recovers(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps) -> None:
    server = await apns_server()
    t0 = clock.time()
    server.down = True

    def end() -> None:
        server.down = False
        server.response_delay = 0.01  # answers take a while: concurrency shows

    policy = RetryPolicy(drain_rate=10, drain_concurrency=4)
    service, provider = apns_push(server, service_options={
        "sleep": outage(sleeps, t0 + 60, end), "retry": policy})
    starts: list[float] = []  # when each attempt started (fake clock)
    attempt = provider.attempt

    async def timed(push: Any, time_left: float | None = None) -> Any:
        starts.append(clock.time())
        return await attempt(push, time_left)

    provider.attempt = timed
    devices = [ios_device(f"d{i}", token=f"{i:064x}") for i in range(40)]
    async with asyncio.timeout(20):
        results = await asyncio.gather(*(service.send(d, message(clock)) for d in devices))
    assert all(r.delivered for r in results)
    delivered = {r.token for r in server.delivered()}
    assert len(delivered) == 40 and len(server.delivered()) == 40
    assert len(server.wire) == 40  # nothing twice
    # A token bucket of 10/s with a burst of 10: never more than 20 starts in any
    # second, during the outage (retries that fail) as after it (the backlog).
    retries = starts[40:]  # after the 40 first attempts, which are never held back
    assert max(sum(1 for b in retries if a <= b < a + 1) for a in retries) <= 20
    arrivals = sorted(w.at for w in server.wire)
    assert arrivals[0] >= t0 + 60
    assert arrivals[-1] - arrivals[0] >= 2  # 40 at 10/s (10 at once): the backlog took time
    assert server.peak_streams <= 4
    assert service.outbox_size == 0


async def test_call_retries_go_before_the_backlog(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps) -> None:
    server = await apns_server()
    t0 = clock.time()
    server.down = True

    def end() -> None:
        server.down = False

    policy = RetryPolicy(drain_rate=5, drain_concurrency=1)
    service, _ = apns_push(server, service_options={
        "sleep": outage(sleeps, t0 + 20, end), "retry": policy})
    backlog = [asyncio.ensure_future(service.send(ios_device(f"d{i}", token=f"{i:064x}"),
                                                  message(clock))) for i in range(20)]
    await asyncio.sleep(0.01)
    ring = await asyncio.wait_for(service.send(ios_device("callee"), call(clock, ttl=60)), 10)
    assert ring.delivered
    await asyncio.wait_for(asyncio.gather(*backlog), 20)
    order = [w.headers["apns-push-type"] for w in server.wire]
    assert order.index("voip") < 3  # among the first retries after the recovery


# -- the store's outbox ------------------------------------------------------------------------

async def test_call_pushes_never_wait_for_a_store_write(
        apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    class StalledOutbox:
        def __init__(self) -> None:
            self.added: list[OutboxPush] = []

        async def add_outbox_push(self, push: OutboxPush) -> None:
            self.added.append(push)
            await asyncio.Event().wait()

        async def delete_outbox_push(self, push_id: str) -> None:
            pass

        async def outbox_pushes(self, node: str = "") -> list[OutboxPush]:
            return []

        async def get_device(self, device_id: str) -> Device | None:
            return None

    server = await apns_server()
    outbox = StalledOutbox()
    service, _ = apns_push(server, service_options={"outbox": outbox})
    service.store_wait = 0.2
    assert (await service.send(ios_device(), call(clock))).delivered  # warm up
    started = time.perf_counter()
    assert (await service.send(ios_device(), call(clock))).delivered
    assert time.perf_counter() - started < 0.1 and outbox.added == []
    started = time.perf_counter()
    assert (await service.send(ios_device(), message(clock))).delivered  # not held longer
    assert 0.15 < time.perf_counter() - started < 1.0 and len(outbox.added) == 1


async def test_delivered_at_once_leaves_nothing_in_the_outbox(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/push.db")
    try:
        server = await apns_server()
        service, _ = apns_push(server, service_options={"store": store, "outbox": store})
        device = ios_device()
        await store.put_device(device)
        result = await service.send(device, message(clock))
        assert result.delivered
        await service.close()
        assert await store.outbox_pushes() == []
        assert [a.outcome for a in await store.push_attempts(device.device_id)] == ["delivered"]
    finally:
        await store.close()


async def test_a_device_disabled_during_the_outage_is_not_pushed(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps, tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/push.db")
    try:
        server = await apns_server()
        server.down = True
        device = ios_device()
        await store.put_device(device)

        def end() -> None:
            server.down = False

        service, _ = apns_push(server, service_options={
            "store": store, "outbox": store, "sleep": outage(sleeps, clock.time() + 30, end)})
        sending = asyncio.ensure_future(service.send(device, message(clock)))
        await wait_for(lambda: store.push_attempts(device.device_id))
        assert await store.disable_device(device.device_id, "Unregistered", clock.time())
        result = await asyncio.wait_for(sending, 5)
        assert (result.outcome, result.reason) == ("skipped", "device disabled")
        assert server.wire == []
        await service.close()
        assert await store.outbox_pushes() == []
    finally:
        await store.close()


async def test_restart_resumes_pending_pushes_and_delivers_each_once(
        backend: Any, apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    server = await apns_server()
    server.down = True
    store = await backend.open()
    phone = ios_device()
    other = ios_device("ipad", token="c" * 64, voip="d" * 64)
    for device in (phone, other):
        await store.put_device(device)
    first, _ = apns_push(server, service_options={"store": store, "outbox": store,
                                                  "sleep": never})
    pending = [asyncio.ensure_future(first.send(phone, message(clock))),
               asyncio.ensure_future(first.send(other, message(clock, ttl=60, message_id="m2"))),
               asyncio.ensure_future(first.send(phone, call(clock)))]
    await wait_for(lambda: first.outbox_size == 3)
    await first.close()  # a stop: the durable pushes stay in the store
    results = await asyncio.gather(*pending)
    assert [r.outcome for r in results] == ["queued", "queued", "failed"]
    kept = await store.outbox_pushes()
    assert sorted(r.device_id for r in kept) == ["ipad", "iphone"]
    assert all(r.kind == "message" for r in kept)
    clock.advance(120)  # the second message's time to live ends while we are down

    store = await backend.open()  # the restart
    server.down = False
    second, _ = apns_push(server, service_options={"store": store, "outbox": store})
    await second.start()
    await wait_for(lambda: _empty(store.outbox_pushes()))
    assert len(server.delivered()) == 1
    (sent,) = server.wire
    assert sent.headers["apns-id"] == results[0].push_id  # the same push, resumed
    assert sent.headers["apns-push-type"] == "alert" and server.on_wire(ALERT) == 1
    log = [(a.outcome, a.reason) for a in reversed(await store.push_attempts(phone.device_id))]
    assert log[-2:] == [("queued", "resumed from the outbox after a restart"),
                        ("delivered", "")]
    assert (await store.push_attempts(other.device_id))[0].outcome == "expired"
    await second.close()

    store = await backend.open()  # and once more: nothing left, nothing sent again
    third, _ = apns_push(server, service_options={"store": store, "outbox": store})
    await third.start()
    await asyncio.sleep(0.05)
    assert len(server.wire) == 1


async def test_stop_tells_waiting_callers(apns_server: Any, apns_push: Any,
                                          clock: ManualScheduler) -> None:
    server = await apns_server()
    server.always("b" * 64, Reply(503, "ServiceUnavailable"))
    service, _ = apns_push(server, service_options={"sleep": never})
    sending = asyncio.ensure_future(service.send(ios_device(), call(clock)))
    await wait_for(lambda: service.outbox_size)
    await service.close()
    result = await sending
    assert (result.outcome, result.attempts) == ("failed", 1)
    assert service.outbox_size == 0


def test_notifications_survive_their_json() -> None:
    clock = ManualScheduler(1_764_180_000.0)
    for n in (message(clock), call(clock)):
        again = from_json(n.kind, to_json(n))
        assert again == n and again.deadline == n.deadline
    with pytest.raises(ValueError):
        from_json("fax", "{}")


# -- metrics ---------------------------------------------------------------------------------------

async def test_metrics_show_the_outbox_and_outcomes(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps) -> None:
    metrics = Metrics()
    server = await apns_server()
    server.down = True
    seen: list[float] = []

    def end() -> None:
        server.down = False

    sleep = outage(sleeps, clock.time() + 30, end)

    async def watching(seconds: float) -> None:
        seen.append(metrics.registry.get_sample_value(
            "sipwake_push_outbox", {"provider": "apns", "kind": "message"}) or 0.0)
        await sleep(seconds)

    service, _ = apns_push(server, service_options={"observer": metrics, "sleep": watching})
    result = await asyncio.wait_for(service.send(ios_device(), message(clock)), 5)
    assert result.delivered
    assert seen and set(seen) == {1.0}  # waiting in the outbox all along
    value = metrics.registry.get_sample_value
    assert value("sipwake_push_outbox", {"provider": "apns", "kind": "message"}) == 0.0
    labels = {"provider": "apns", "kind": "message"}
    assert value("sipwake_push_attempts_total", {**labels, "outcome": "retry"}) == \
        result.attempts - 1
    assert value("sipwake_push_attempts_total", {**labels, "outcome": "delivered"}) == 1.0
