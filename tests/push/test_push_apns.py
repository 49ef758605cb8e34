"""APNs provider + push service against the strict local APNs stand-in."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sipwake.push import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    MissedCallNotification,
    VoicemailNotification,
)
from sipwake.push.h2client import H2Pool
from sipwake.push.tls import client_context, parse_origin
from sipwake.testing import ManualScheduler
from tests.helpers.apns_standin import APNsStandIn, Reply
from tests.helpers.clock import Sleeps
from tests.helpers.push import BUNDLE, MemoryPushLog, ios_device

ALERT = "a" * 64
VOIP = "b" * 64


def call(clock: ManualScheduler, call_id: str = "park-1", ttl: float = 30) -> CallNotification:
    return CallNotification(call_id=call_id, caller_uri="sip:bob@example.com",
                            caller_number="+15551234", caller_name="Bob Builder",
                            pickup_uri="sip:pickup-park-1@example.com",
                            expires_at=int(clock.time() + ttl))


def message(clock: ManualScheduler, body: str = "hello") -> MessageNotification:
    return MessageNotification(message_id="m1", from_uri="sip:bob@example.com",
                               from_number="+15551234", from_name="Bob Builder", body=body,
                               unread=3, badge=4, deadline=clock.time() + 3600)


async def test_call_voip_mode_over_tls(apns_server: Any, apns_push: Any, certs: Any,
                                       clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await apns_server(ssl_context=certs.server_context(["h2"]))
    service, _ = apns_push(server, ca_file=certs.ca_file)
    n = call(clock)
    result = await service.send(ios_device(), n)
    assert result.outcome == "delivered", result
    assert server.violations == []
    (req,) = server.requests
    assert req.token == VOIP
    assert req.headers["apns-push-type"] == "voip"
    assert req.headers["apns-topic"] == BUNDLE + ".voip"
    assert req.headers["apns-priority"] == "10"
    assert req.headers["apns-expiration"] == str(n.expires_at)  # a late call must not ring
    assert req.headers["apns-collapse-id"] == "park-1"
    assert req.headers["apns-id"] == result.push_id
    assert req.payload == {"aps": {}, "type": "call", "call_id": "park-1",
                           "caller_uri": "sip:bob@example.com", "caller_number": "+15551234",
                           "caller_name": "Bob Builder",
                           "pickup_uri": "sip:pickup-park-1@example.com",
                           "expires_at": n.expires_at}
    (attempt,) = store.attempts
    assert (attempt.outcome, attempt.status, attempt.attempt, attempt.provider) == (
        "delivered", 200, 1, "apns")
    assert attempt.latency_ms > 0


async def test_tls_needs_the_ca(apns_server: Any, apns_push: Any, certs: Any,
                                clock: ManualScheduler) -> None:
    server = await apns_server(ssl_context=certs.server_context(["h2"]))
    service, _ = apns_push(server)  # no ca_file: the self-signed CA is not trusted
    result = await service.send(ios_device(), call(clock, ttl=1))
    assert result.outcome == "expired" and result.status == 0
    assert server.requests == []


def test_plain_http_needs_allow_insecure() -> None:
    with pytest.raises(ValueError, match="allow_insecure"):
        parse_origin("http://127.0.0.1:1", allow_insecure=False)
    assert parse_origin("http://127.0.0.1:1", allow_insecure=True).port == 1


async def test_voip_mode_sends_everything_else_as_alerts(
        apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    device = ios_device()
    notifications = [
        CallCancelledNotification(call_id="park-1", reason="answered_elsewhere"),
        MissedCallNotification(call_id="park-1", caller_uri="sip:bob@example.com",
                               caller_number="+15551234", caller_name="Bob", at=int(clock.time()),
                               badge=2),
        message(clock),
        VoicemailNotification(from_uri="sip:bob@example.com", from_name="Bob", duration=12,
                              new=2, old=5, badge=3),
    ]
    for n in notifications:
        assert (await service.send(device, n)).outcome == "delivered"
    assert server.violations == []
    for req, n in zip(server.requests, notifications, strict=True):
        assert req.token == ALERT
        assert req.headers["apns-push-type"] == "alert"
        assert req.headers["apns-topic"] == BUNDLE
        assert req.headers["apns-priority"] == "10"
        assert req.payload["type"] == n.kind
        assert "alert" in req.payload["aps"]
    missed, msg, vm = (r.payload for r in server.requests[1:])
    assert missed["at"] == int(clock.time()) and missed["aps"]["badge"] == 2
    assert msg["unread"] == 3 and msg["truncated"] is False and msg["preview"] == "hello"
    assert msg["aps"]["alert"] == {"title": "Message from Bob Builder", "body": "hello",
                                   "title-loc-key": "MESSAGE_FROM",
                                   "title-loc-args": ["Bob Builder"]}
    assert missed["aps"]["alert"] == {"title": "Missed call", "title-loc-key": "MISSED_CALL_TITLE",
                                      "body": "Missed call from Bob (+15551234)",
                                      "loc-key": "MISSED_CALL_FROM",
                                      "loc-args": ["Bob (+15551234)"]}
    assert vm["aps"]["alert"]["loc-key"] == "VOICEMAIL_FROM"
    assert server.requests[0].payload["aps"]["alert"] == {
        "title": "Call answered elsewhere", "title-loc-key": "CALL_ANSWERED_ELSEWHERE"}
    assert vm["duration"] == 12 and vm["new"] == 2 and vm["old"] == 5
    assert server.requests[0].headers["apns-collapse-id"] == "park-1"  # replaces the ring


async def test_alert_mode_call(apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    device = ios_device(mode="alert")
    n = call(clock)
    # The calls layer repeats the alert while the call stays parked: same collapse id.
    for _ in range(2):
        assert (await service.send(device, n)).outcome == "delivered"
    first, second = server.requests
    assert first.token == ALERT
    assert first.headers["apns-push-type"] == "alert"
    assert first.headers["apns-topic"] == BUNDLE
    assert first.headers["apns-expiration"] == str(n.expires_at)
    assert first.payload["aps"] == {
        "category": "INCOMING_CALL", "sound": "ring.caf",
        "alert": {"title": "Incoming call", "title-loc-key": "CALL_TITLE",
                  "body": "Incoming call from Bob Builder (+15551234)", "loc-key": "CALL_FROM",
                  "loc-args": ["Bob Builder (+15551234)"]}}
    assert first.payload["call_id"] == "park-1"
    assert second.headers["apns-collapse-id"] == first.headers["apns-collapse-id"] == "park-1"
    assert second.headers["apns-id"] != first.headers["apns-id"]  # two notifications


async def test_voip_only_device_gets_no_alerts(apns_server: Any, apns_push: Any,
                                               clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    device = ios_device(token="")
    result = await service.send(device, message(clock))
    assert result.outcome == "skipped" and "alert token" in result.reason
    assert (await service.send(device, call(clock))).outcome == "delivered"
    assert [r.token for r in server.requests] == [VOIP]
    assert [a.outcome for a in store.attempts] == ["skipped", "delivered"]


async def test_privacy_mode_hides_names_and_text(apns_server: Any, apns_push: Any,
                                                 clock: ManualScheduler) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    secret = "meet me at the secret place"
    for device in (ios_device(privacy=True), ios_device(privacy=True, mode="alert")):
        await service.send(device, call(clock))
        await service.send(device, message(clock, secret))
    assert server.violations == []
    for req in server.requests:
        text = req.body.decode() + repr(req.headers)
        for leak in ("Bob", "15551234", "bob@example.com", "secret"):
            assert leak not in text, (leak, text)
    assert server.requests[1].payload["message_id"] == "m1"
    assert server.requests[0].payload["call_id"] == "park-1"


async def test_sandbox_devices_use_the_sandbox_host(apns_server: Any, apns_push: Any,
                                                    clock: ManualScheduler) -> None:
    production, sandbox = await apns_server(), await apns_server()
    service, _ = apns_push(production, sandbox=sandbox)
    await service.send(ios_device(sandbox=True), call(clock))
    await service.send(ios_device(), call(clock))
    assert len(sandbox.requests) == 1 and len(production.requests) == 1


@pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic",
                                    "TopicDisallowed"])
async def test_rejected_token_disables_device(apns_server: Any, apns_push: Any,
                                              clock: ManualScheduler, store: MemoryPushLog,
                                              reason: str) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    device = store.add(ios_device(token_updated_at=clock.time() - 10))
    server.always(ALERT, Reply(400, reason))
    result = await service.send(device, message(clock))
    assert (result.outcome, result.status, result.reason, result.disabled) == (
        "invalid_token", 400, reason, True)
    assert store.disable_calls == [(device.device_id, reason, clock.time())]
    assert not device.enabled
    # Disabled devices are never pushed again.
    again = await service.send(device, message(clock))
    assert again.outcome == "skipped" and len(server.requests) == 1


async def test_unregistered_keeps_a_token_uploaded_after_its_timestamp(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    gone_at = clock.time() - 100
    old = store.add(ios_device("old", token="c" * 64, token_updated_at=gone_at - 50))
    new = store.add(ios_device("new", token="d" * 64, token_updated_at=gone_at + 50))
    for token in ("c" * 64, "d" * 64):
        server.always(token, Reply(410, "Unregistered", timestamp_ms=int(gone_at * 1000)))
    gone = await service.send(old, message(clock))
    kept = await service.send(new, message(clock))
    assert gone.outcome == kept.outcome == "invalid_token"
    assert store.disable_calls[0][2] == pytest.approx(gone_at, abs=0.001)
    assert (gone.disabled, old.enabled) == (True, False)
    assert (kept.disabled, new.enabled) == (False, True)


@pytest.mark.parametrize("status,reason", [(429, "TooManyRequests"),
                                           (500, "InternalServerError"),
                                           (503, "ServiceUnavailable")])
async def test_transient_errors_are_retried_with_the_same_apns_id(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps, store: MemoryPushLog,
        status: int, reason: str) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    server.program(VOIP, Reply(status, reason), Reply(status, reason))
    result = await service.send(ios_device(), call(clock))
    assert result.outcome == "delivered" and result.attempts == 3
    assert len({r.headers["apns-id"] for r in server.requests}) == 1
    assert [a.outcome for a in store.attempts] == ["retry", "retry", "delivered"]
    # jittered exponential backoff (jitter pinned at the middle: 75 %)
    assert sleeps.seen == [0.375, 0.75]


async def test_retry_after_is_honoured(apns_server: Any, apns_push: Any,
                                       clock: ManualScheduler, sleeps: Sleeps) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    server.program(VOIP, Reply(429, "TooManyRequests", retry_after="7"))
    assert (await service.send(ios_device(), call(clock))).outcome == "delivered"
    assert sleeps.seen == [7.0]


async def test_retries_stop_at_the_deadline(apns_server: Any, apns_push: Any,
                                            clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    server.always(VOIP, Reply(503, "ServiceUnavailable"))
    n = call(clock, ttl=5)
    starts: list[float] = []
    original = server.handle

    def spy(*args: Any) -> Any:
        starts.append(clock.time())
        return original(*args)

    server.handle = spy  # type: ignore[method-assign]
    result = await service.send(ios_device(), n)
    assert result.outcome == "expired"
    assert starts and all(t < n.deadline for t in starts)
    assert clock.time() < n.deadline  # did not even sleep past it
    assert result.attempts == len(starts) == 4  # 0.375 + 0.75 + 1.5 (+ 3 would pass 5 s)
    assert store.attempts[-1].outcome == "expired"
    assert [a.outcome for a in store.attempts[:-1]] == ["retry"] * 3


async def test_deadline_already_passed(apns_server: Any, apns_push: Any, clock: ManualScheduler,
                                       store: MemoryPushLog) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    n = call(clock, ttl=5)
    clock.advance(6)
    result = await service.send(ios_device(), n)
    assert result.outcome == "expired" and result.attempts == 0
    assert server.requests == [] and store.attempts[0].outcome == "expired"


async def test_permanent_errors_fail_without_retry(apns_server: Any, apns_push: Any,
                                                   clock: ManualScheduler) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    server.always(VOIP, Reply(400, "BadExpirationDate"))
    result = await service.send(ios_device(), call(clock))
    assert (result.outcome, result.attempts) == ("failed", 1)


async def test_one_jwt_for_100_pushes_over_3_connections(
        apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    # Five streams per connection; 100 concurrent pushes fill three connections.
    server = await apns_server(max_concurrent_streams=5, response_delay=0.005)
    service, provider = apns_push(server, max_connections=3)
    devices = [ios_device(f"d{i}", voip=f"{i:064x}") for i in range(100)]
    results = await asyncio.gather(*(service.send(d, call(clock)) for d in devices))
    assert all(r.outcome == "delivered" for r in results)
    assert server.violations == []  # never more than 5 streams on a connection
    assert server.peak_streams == 5
    assert server.connections == 3
    assert len({r.connection for r in server.requests}) == 3
    assert len(server.jwts) == 1 and provider.token.minted == 1
    # h2 forgets finished streams (we count open streams ourselves, see h2client).
    for conn in provider.pools[False]._conns:
        assert conn._h2.streams == {} and conn._h2.outbound_open == 0


async def test_jwt_refreshed_after_50_minutes(apns_server: Any, apns_push: Any,
                                              clock: ManualScheduler) -> None:
    server = await apns_server()
    service, provider = apns_push(server)
    await service.send(ios_device(), call(clock))
    clock.advance(49 * 60)
    await service.send(ios_device(), call(clock))
    assert len(server.jwts) == 1
    clock.advance(2 * 60)  # 51 min: older than 50, younger than Apple's 60
    await service.send(ios_device(), call(clock))
    clock.advance(60)
    await service.send(ios_device(), call(clock))
    assert len(server.jwts) == 2 and provider.token.minted == 2
    assert server.violations == []
    assert all(r.status == 200 for r in server.requests)


async def test_expired_provider_token_mints_once_then_succeeds(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps, store: MemoryPushLog) -> None:
    server = await apns_server()
    service, provider = apns_push(server)
    await service.send(ios_device(), call(clock))
    server.expire_current_jwts()  # e.g. Apple's view of our clock differs
    devices = [ios_device(f"d{i}", voip=f"{i:064x}") for i in range(10)]
    results = await asyncio.gather(*(service.send(d, call(clock)) for d in devices))
    assert all(r.outcome == "delivered" for r in results)
    assert provider.token.minted == 2  # one new token for all ten refusals
    assert len(server.jwts) == 2
    assert not sleeps.seen  # retried at once, no backoff
    refused = [r for r in server.requests if r.reason == "ExpiredProviderToken"]
    assert len(refused) == 10


async def test_expired_provider_token_twice_fails(apns_server: Any, apns_push: Any,
                                                  clock: ManualScheduler) -> None:
    server = await apns_server()
    service, provider = apns_push(server)
    server.always(VOIP, Reply(403, "ExpiredProviderToken"))
    result = await service.send(ios_device(), call(clock))
    assert (result.outcome, result.attempts, provider.token.minted) == ("failed", 2, 2)


async def test_goaway_reconnects_and_resends_unprocessed_streams(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await apns_server(goaway_after=3)
    service, _ = apns_push(server)
    devices = [ios_device(f"d{i}", voip=f"{i:064x}") for i in range(10)]
    results = await asyncio.gather(*(service.send(d, call(clock)) for d in devices))
    # Streams past the GOAWAY's last id are resent on a new connection (once inside
    # the client; refused again, the service's retry takes over after a backoff).
    assert all(r.outcome == "delivered" for r in results)
    assert all(a.reason.endswith("refused the request twice")
               for a in store.attempts if a.outcome != "delivered")
    assert server.connections >= 4
    assert server.answered == 10 and server.violations == []
    # sequential pushes after a GOAWAY too
    for d in devices[:4]:
        assert (await service.send(d, call(clock))).outcome == "delivered"


async def test_goaway_on_idle_connection(apns_server: Any, apns_push: Any,
                                         clock: ManualScheduler) -> None:
    server = await apns_server()
    service, provider = apns_push(server)
    assert (await service.send(ios_device(), call(clock))).outcome == "delivered"
    server.goaway_all()
    # Whether the client reads the GOAWAY before or after it sends the next request,
    # the request must end up delivered, once, on a new connection.
    result = await service.send(ios_device(), call(clock))
    assert (result.outcome, result.attempts) == ("delivered", 1)
    assert server.connections == 2 and server.answered == 2
    assert provider.pools[False].connections_opened == 2


async def test_connection_dropped_mid_request_is_retried(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    server.program(VOIP, Reply(0, drop=True))
    result = await service.send(ios_device(), call(clock))
    assert result.outcome == "delivered" and result.attempts == 2
    assert store.attempts[0].status == 0 and store.attempts[0].outcome == "retry"


async def test_idle_connection_is_kept_alive_with_pings(apns_server: Any, apns_push: Any,
                                                        clock: ManualScheduler) -> None:
    server = await apns_server()
    service, _ = apns_push(server, ping_interval=0.02)
    await service.send(ios_device(), call(clock))
    await asyncio.wait_for(server.ping_event.wait(), 5)
    await service.send(ios_device(), call(clock))
    assert server.connections == 1


async def test_standin_is_strict(apns_server: Any, apns_key: Any, clock: ManualScheduler) -> None:
    """The stand-in refuses what APNs refuses (so passing tests mean something)."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    server: APNsStandIn = await apns_server()
    pool = H2Pool(parse_origin(server.url, True), client_context())
    good = pyjwt.encode({"iss": "TEAM123456", "iat": int(clock.time())}, apns_key[1],
                        algorithm="ES256", headers={"kid": "KEY7654321"})
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged = pyjwt.encode({"iss": "TEAM123456", "iat": int(clock.time())}, other_key,
                          algorithm="ES256", headers={"kid": "KEY7654321"})
    stale = pyjwt.encode({"iss": "TEAM123456", "iat": int(clock.time() - 3700)}, apns_key[1],
                         algorithm="ES256", headers={"kid": "KEY7654321"})

    async def post(jwt_token: str = good, push_type: str = "alert", topic: str = BUNDLE,
                   body: bytes = b'{"aps":{"alert":"hi"}}', token: str = ALERT,
                   extra: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes]:
        headers = [(b"authorization", f"bearer {jwt_token}".encode()),
                   (b"apns-push-type", push_type.encode()), (b"apns-topic", topic.encode()),
                   *(extra or [])]
        before = time.perf_counter()
        response = await pool.post(f"/3/device/{token}".encode(), headers, body)
        assert before < response.sent_at < time.perf_counter()  # when it left, for metrics
        return response.status, response.body

    try:
        assert (await post())[0] == 200
        assert await post(jwt_token=forged) == (403, b'{"reason": "InvalidProviderToken"}')
        assert (await post(jwt_token=stale))[1] == b'{"reason": "ExpiredProviderToken"}'
        assert (await post(push_type="voip"))[1] == b'{"reason": "BadTopic"}'
        assert (await post(topic=BUNDLE + ".voip"))[1] == b'{"reason": "BadTopic"}'
        assert (await post(topic="com.other"))[1] == b'{"reason": "TopicDisallowed"}'
        assert (await post(token="xyz"))[1] == b'{"reason": "BadDeviceToken"}'
        big = b'{"aps":{"alert":"' + b"x" * 4100 + b'"}}'
        assert (await post(body=big))[0] == 413
        assert (await post(body=big, push_type="voip", topic=BUNDLE + ".voip"))[0] == 200
        assert (await post(body=b"{nope"))[0] == 400
        assert (await post(extra=[(b"apns-collapse-id", b"x" * 65)]))[1] == \
            b'{"reason": "BadCollapseId"}'
        assert (await post(extra=[(b"apns-priority", b"5")], push_type="voip",
                           topic=BUNDLE + ".voip"))[1] == b'{"reason": "BadPriority"}'
        assert len(server.violations) == 10
    finally:
        await pool.close()


async def test_concurrency_limit_is_enforced_by_the_standin(apns_server: Any,
                                                            clock: ManualScheduler) -> None:
    """A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS is caught."""
    server = await apns_server(max_concurrent_streams=2, response_delay=0.01)
    pool = H2Pool(parse_origin(server.url, True), client_context(), max_connections=1)
    await pool.post(b"/3/device/" + ALERT.encode(), [], b"")  # open the connection
    conn = pool._conns[0]
    assert conn._h2.remote_settings.max_concurrent_streams == 2
    # Make the client misbehave: pretend the server allowed 10.
    conn.has_capacity = lambda: True  # type: ignore[method-assign]
    conn._h2.remote_settings.max_concurrent_streams = 10
    conn._h2.remote_settings.acknowledge()
    await asyncio.gather(*(pool.post(b"/3/device/" + ALERT.encode(), [], b"")
                           for _ in range(4)), return_exceptions=True)
    assert any("concurrent streams" in v or "TooManyStreams" in v for v in server.violations)
    await pool.close()


async def test_an_urgent_request_is_written_at_once(apns_server: Any) -> None:
    """A call push goes to the socket when it starts; others share one write at the
    end of the loop turn."""
    server = await apns_server()
    pool = H2Pool(parse_origin(server.url, True), client_context(), max_connections=1)
    try:
        await pool.post(b"/3/device/" + ALERT.encode(), [], b"")  # open the connection
        conn = pool._conns[0]
        transport = conn._transport
        assert transport is not None
        writes: list[int] = []
        write = transport.write
        transport.write = (  # type: ignore[method-assign]
            lambda data: (writes.append(len(data)), write(data))[1]
        )
        path = b"/3/device/" + ALERT.encode()
        _, later = conn.start([*pool._prefix, (b":path", path)], b"", 5.0)
        assert writes == []
        _, now = conn.start([*pool._prefix, (b":path", path)], b"", 5.0, urgent=True)
        assert len(writes) == 1  # both, at once
        assert (await now).status and (await later).status  # both answered (no JWT: 403)
    finally:
        await pool.close()


async def test_a_request_started_outside_any_task_waits_for_its_connection(
    apns_server: Any,
) -> None:
    """post() needs no current task before its first wait (Tasks.start from a
    callback): a request that must wait for the connection gets it, or its timeout."""
    from sipwake.tasks import Tasks

    server = await apns_server()
    pool = H2Pool(parse_origin(server.url, True), client_context(), max_connections=1)
    tasks = Tasks("push")
    started: list[asyncio.Task[Any]] = []
    path = b"/3/device/" + ALERT.encode()
    loop = asyncio.get_running_loop()
    try:
        loop.call_soon(lambda: started.append(tasks.start(pool.post(path, [], b""))))
        await asyncio.sleep(0)
        await tasks.settled()
        assert started[0].result().status  # answered (no JWT here: 403)
    finally:
        await pool.close()
    # a server that never finishes the handshake: the wait ends at the request's deadline
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    stuck = H2Pool(parse_origin(f"https://127.0.0.1:{port}", True), client_context(),
                   max_connections=1, connect_timeout=5)  # fmt: skip
    loop.call_soon(lambda: started.append(tasks.start(stuck.post(path, [], b"", 0.05))))
    await asyncio.sleep(0)
    await tasks.settled()
    assert "timed out waiting for a connection" in str(started[1].exception())
    await stuck.close()
    silent.close()


def test_token_lifetime_bounds() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from sipwake.push.apns_token import ProviderToken

    clock = ManualScheduler(time.time())
    token = ProviderToken("T", "K", ec.generate_private_key(ec.SECP256R1()),
                          clock=clock.time)
    first = token.header()
    clock.advance(20 * 60)
    assert token.header() is first  # never sooner than 20 minutes
    clock.advance(30 * 60 + 1)
    assert token.header() != first  # past 50 minutes
    second = token.header()
    token.renew(first)  # a stale report about an already replaced token: no new mint
    assert token.header() is second and token.minted == 2


async def test_system_trust_store_honours_ssl_cert_file(
        apns_server: Any, apns_push: Any, certs: Any, clock: ManualScheduler,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca_file)
    server = await apns_server(ssl_context=certs.server_context(["h2"]))
    service, _ = apns_push(server)  # no ca_file: trust comes from SSL_CERT_FILE
    assert (await service.send(ios_device(), call(clock))).outcome == "delivered"


def test_under_uvloop(apns_key: Any, certs: Any) -> None:
    """The server runs on uvloop when installed: its transports are not asyncio's."""
    uvloop = pytest.importorskip("uvloop")
    from sipwake.push import APNsProvider, APNsSettings, PushService
    from tests.helpers.push import KEY_ID, TEAM_ID

    async def main() -> tuple[str, int]:
        server = APNsStandIn(team_id=TEAM_ID, key_id=KEY_ID, public_key=apns_key[1].public_key(),
                             topics={BUNDLE}, ssl_context=certs.server_context(["h2"]))
        await server.start()
        provider = APNsProvider(APNsSettings(team_id=TEAM_ID, key_id=KEY_ID, key_file=apns_key[0],
                                             url=server.url, sandbox_url=server.url,
                                             ca_file=certs.ca_file))
        service = PushService(MemoryPushLog(), apns=provider)
        try:
            clock = ManualScheduler(time.time())
            results = await asyncio.gather(*(service.send(
                ios_device(f"d{i}", voip=f"{i:064x}"), call(clock)) for i in range(20)))
            return results[0].outcome, len(server.violations)
        finally:
            await service.close()
            await server.close()

    assert uvloop.run(main()) == ("delivered", 0)


async def test_request_timeout_resets_the_stream_and_retries(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await apns_server(response_delay=2.0)
    service, provider = apns_push(server, request_timeout=0.05)
    result = await service.send(ios_device(), call(clock, ttl=2))
    assert (result.outcome, result.attempts) == ("expired", 3)
    assert {a.reason for a in store.attempts} == {"request timed out"}
    (conn,) = provider.pools[False]._conns  # the connection itself stays usable
    assert conn._streams == {} and conn._h2.streams == {}


async def test_cancelled_send_resets_its_stream(apns_server: Any, apns_push: Any,
                                                clock: ManualScheduler) -> None:
    server = await apns_server(response_delay=0.2)
    service, provider = apns_push(server)
    task = asyncio.ensure_future(service.send(ios_device(), call(clock)))
    await server.request_event.wait()  # the request is on the wire
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (conn,) = provider.pools[False]._conns
    assert conn._streams == {}
    server.response_delay = 0
    assert (await service.send(ios_device(), call(clock))).outcome == "delivered"
