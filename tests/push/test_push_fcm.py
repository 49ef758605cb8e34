"""FCM provider + push service against the strict local FCM and OAuth stand-ins."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from sipwake.push import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    MissedCallNotification,
    VoicemailNotification,
)
from sipwake.testing import ManualScheduler
from tests.helpers.clock import Sleeps
from tests.helpers.fcm_standin import FCMReply
from tests.helpers.push import PROJECT, MemoryPushLog, android_device
from tests.helpers.wait import wait_for


def call(clock: ManualScheduler, ttl: float = 30) -> CallNotification:
    return CallNotification(call_id="park-1", caller_uri="sip:bob@example.com",
                            caller_number="+15551234", caller_name="Bob Builder",
                            pickup_uri="sip:pickup-park-1@example.com",
                            expires_at=int(clock.time() + ttl))


def message(clock: ManualScheduler, body: str = "hello") -> MessageNotification:
    return MessageNotification(message_id="m1", from_uri="sip:bob@example.com",
                               from_number="+15551234", from_name="Bob", body=body, unread=3,
                               deadline=clock.time() + 3600)


async def test_every_kind_is_a_high_priority_string_data_message(
        fcm_server: Any, fcm_push: Any, clock: ManualScheduler, store: MemoryPushLog) -> None:
    server = await fcm_server()
    service, _ = fcm_push(server)
    device = android_device()
    n = call(clock)
    kinds = [
        n,
        CallCancelledNotification(call_id="park-1", reason="declined"),
        MissedCallNotification(call_id="park-1", caller_uri="sip:bob@example.com",
                               caller_number="+15551234", caller_name="Bob", at=int(clock.time())),
        message(clock),
        VoicemailNotification(from_uri="sip:bob@example.com", from_name="Bob", duration=12,
                              new=2, old=5),
    ]
    for k in kinds:
        result = await service.send(device, k)
        assert result.outcome == "delivered", result
    assert server.violations == []
    assert server.token_requests == 1  # cached across sends
    first = server.sends[0].message
    assert first["token"] == "fcm-token-1"
    assert first["data"] == {"type": "call", "call_id": "park-1",
                             "caller_uri": "sip:bob@example.com", "caller_number": "+15551234",
                             "caller_name": "Bob Builder",
                             "pickup_uri": "sip:pickup-park-1@example.com",
                             "expires_at": str(n.expires_at),
                             # what to show: keys for the app's strings, and in English
                             "title": "Incoming call", "title_loc_key": "CALL_TITLE",
                             "body": "Incoming call from Bob Builder (+15551234)",
                             "loc_key": "CALL_FROM", "loc_args": '["Bob Builder (+15551234)"]'}
    assert first["android"] == {"priority": "HIGH", "ttl": "30s", "collapse_key": "park-1"}
    msg = server.sends[3].message["data"]
    assert (msg["unread"], msg["truncated"], msg["preview"]) == ("3", "false", "hello")
    vm = server.sends[4].message["data"]
    assert (vm["duration"], vm["new"], vm["old"]) == ("12", "2", "5")
    assert all(a.provider == "fcm" and a.latency_ms > 0 for a in store.attempts)


async def test_call_ttl_counts_down_to_the_park_expiry(fcm_server: Any, fcm_push: Any,
                                                       clock: ManualScheduler) -> None:
    server = await fcm_server()
    service, _ = fcm_push(server)
    n = call(clock, ttl=30)
    clock.advance(12)
    await service.send(android_device(), n)
    assert server.sends[0].message["android"]["ttl"] == "18s"


async def test_over_tls_with_ca_file(fcm_server: Any, fcm_push: Any, certs: Any,
                                     clock: ManualScheduler) -> None:
    server = await fcm_server(ssl_context=certs.server_context(["h2"]))
    service, _ = fcm_push(server, ca_file=certs.ca_file)
    assert (await service.send(android_device(), call(clock))).outcome == "delivered"


async def test_privacy_mode(fcm_server: Any, fcm_push: Any, clock: ManualScheduler) -> None:
    server = await fcm_server()
    service, _ = fcm_push(server)
    device = android_device(privacy=True)
    await service.send(device, call(clock))
    await service.send(device, message(clock, "the secret plan"))
    assert server.violations == []
    for send in server.sends:
        text = repr(send.body)
        for leak in ("Bob", "15551234", "bob@example.com", "secret"):
            assert leak not in text
    assert server.sends[1].message["data"]["message_id"] == "m1"


@pytest.mark.parametrize("code,status", [("UNREGISTERED", 404), ("INVALID_ARGUMENT", 400),
                                         ("SENDER_ID_MISMATCH", 403)])
async def test_token_errors_disable_the_device(fcm_server: Any, fcm_push: Any,
                                               clock: ManualScheduler, store: MemoryPushLog,
                                               code: str, status: int) -> None:
    server = await fcm_server()
    service, _ = fcm_push(server)
    device = store.add(android_device(token_updated_at=clock.time() - 5))
    server.always("fcm-token-1", FCMReply(code))
    result = await service.send(device, message(clock))
    assert (result.outcome, result.status, result.disabled) == ("invalid_token", status, True)
    assert store.disable_calls == [(device.device_id, code, clock.time())]
    assert (await service.send(device, message(clock))).outcome == "skipped"
    assert len(server.sends) == 1


async def test_invalid_argument_not_about_the_token_is_not_a_token_error() -> None:
    import json

    from sipwake.push.fcm import classify

    body = json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                 "message": "Request contains an invalid argument.",
                                 "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                              "fieldViolations": [{"field": "message.data"}]}]}})
    assert classify(400, body.encode(), None).outcome == "failed"


@pytest.mark.parametrize("code", ["QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"])
async def test_transient_errors_are_retried(fcm_server: Any, fcm_push: Any, clock: ManualScheduler, sleeps: Sleeps,
                                            store: MemoryPushLog, code: str) -> None:
    server = await fcm_server()
    service, _ = fcm_push(server)
    server.program("fcm-token-1", FCMReply(code, retry_after="9"), FCMReply(code))
    result = await service.send(android_device(), message(clock))
    assert result.outcome == "delivered" and result.attempts == 3
    assert [a.outcome for a in store.attempts] == ["retry", "retry", "delivered"]
    assert sleeps.seen == [9.0, 0.75]  # Retry-After first, then the backoff


async def test_retry_after_beyond_the_deadline_expires(fcm_server: Any, fcm_push: Any,
                                                       clock: ManualScheduler, sleeps: Sleeps) -> None:
    server = await fcm_server()
    service, _ = fcm_push(server)
    server.program("fcm-token-1", FCMReply("QUOTA_EXCEEDED", retry_after="60"))
    result = await service.send(android_device(), call(clock, ttl=30))
    assert result.outcome == "expired" and result.attempts == 1
    assert sleeps.seen == []


async def test_token_refreshed_once_under_concurrency_off_the_loop(
        fcm_server: Any, fcm_push: Any, clock: ManualScheduler) -> None:
    server = await fcm_server()
    service, provider = fcm_push(server)
    loop_thread = threading.get_ident()
    threads: list[int] = []
    original = provider.auth._refresh_blocking

    def spy() -> Any:
        threads.append(threading.get_ident())
        return original()

    provider.auth._refresh_blocking = spy
    devices = [android_device(f"p{i}", token=f"tok-{i}") for i in range(20)]
    results = await asyncio.gather(*(service.send(d, call(clock)) for d in devices))
    assert all(r.outcome == "delivered" for r in results)
    assert server.token_requests == 1 and len(threads) == 1
    assert threads[0] != loop_thread
    assert len({s.bearer for s in server.sends}) == 1
    # Past 80 % of its life the token is renewed once, in the background: the sends
    # meanwhile go out at once with the current one.
    clock.advance(0.81 * 3600)
    results = await asyncio.gather(*(service.send(d, call(clock)) for d in devices[:5]))
    assert all(r.outcome == "delivered" for r in results)
    assert len({s.bearer for s in server.sends}) == 1
    await server.wait_token_requests(2)
    await wait_for(lambda: provider.auth.current() != server.sends[0].bearer)
    assert (await service.send(devices[0], call(clock))).outcome == "delivered"
    assert server.sends[-1].bearer != server.sends[0].bearer
    assert server.token_requests == 2 and len(threads) == 2


async def test_refused_access_token_is_replaced_once(fcm_server: Any, fcm_push: Any,
                                                     clock: ManualScheduler, sleeps: Sleeps,
                                                     store: MemoryPushLog) -> None:
    server = await fcm_server()
    service, _ = fcm_push(server)
    await service.send(android_device(), call(clock))
    server.revoke_all()
    result = await service.send(android_device(), call(clock))
    assert result.outcome == "delivered" and result.attempts == 2
    assert server.token_requests == 2 and not sleeps.seen
    assert store.attempts[1].status == 401


async def test_token_url_wins_over_the_key_file(fcm_server: Any, fcm_push: Any) -> None:
    # The key file's token_uri is https://oauth2.invalid/token (see conftest).
    server = await fcm_server()
    _, provider = fcm_push(server)
    assert provider.auth.token_url == server.token_url
    assert provider.url == f"{server.url}/v1/projects/{PROJECT}/messages:send"


async def test_unreachable_token_endpoint_is_retried_until_the_deadline(
        fcm_server: Any, fcm_push: Any, clock: ManualScheduler) -> None:
    server = await fcm_server()
    service, provider = fcm_push(server)
    provider.auth._request._allow_insecure = False  # token endpoint refused as insecure
    result = await service.send(android_device(), call(clock, ttl=2))
    assert result.outcome == "expired" and result.status == 0
    assert server.sends == []


async def test_standin_rejects_non_string_data(fcm_server: Any, fcm_push: Any,
                                               clock: ManualScheduler) -> None:
    """The stand-in really checks value types (so passing tests mean something)."""
    import json

    from sipwake.push.h2client import H2Pool
    from sipwake.push.tls import client_context, parse_origin

    server = await fcm_server()
    _, provider = fcm_push(server)
    token = await provider.auth.token()
    pool = H2Pool(parse_origin(server.url, True), client_context())
    auth = [(b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json")]

    async def post(message: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> int:
        body = json.dumps({"message": message}).encode()
        return (await pool.post(provider.path.encode(), headers, body)).status

    try:
        assert await post({"token": "t", "data": {"unread": 3}}, auth) == 400
        assert await post({"token": "t"}, auth[1:]) == 401
        assert await post({"token": "t", "data": {"a": "x" * 4096}}, auth) == 400
    finally:
        await pool.close()
    assert len(server.violations) == 2
