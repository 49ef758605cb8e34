"""Provider faults against the strict stand-ins: connections cut mid-request, stalls,
GOAWAY, a stalled or failing OAuth token endpoint. Every push ends delivered once (or
expired), and each request is on the wire once, or twice only when it was refused
unprocessed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sipwake.push import CallNotification, MessageNotification
from sipwake.testing import ManualScheduler
from tests.helpers.apns_standin import Reply
from tests.helpers.clock import Sleeps
from tests.helpers.fcm_standin import FCMReply
from tests.helpers.h2_standin import count_by
from tests.helpers.push import MemoryPushLog, android_device, ios_device
from tests.helpers.wait import wait_for

VOIP = "b" * 64


def call(clock: ManualScheduler, ttl: float = 30, call_id: str = "park-1") -> CallNotification:
    return CallNotification(call_id=call_id, caller_uri="sip:bob@example.com",
                            caller_number="+15551234", caller_name="Bob",
                            pickup_uri=f"sip:pickup-{call_id}@example.com",
                            expires_at=int(clock.time() + ttl))


def message(clock: ManualScheduler, ttl: float = 3600) -> MessageNotification:
    return MessageNotification(message_id="m1", from_uri="sip:bob@example.com",
                               from_number="+15551234", from_name="Bob", body="hello",
                               unread=1, deadline=clock.time() + ttl)


async def tls_fcm(fcm_server: Any, fcm_push: Any, certs: Any, **settings: Any) -> Any:
    """FCM over TLS with ALPN h2, as fcm.googleapis.com."""
    server = await fcm_server(ssl_context=certs.server_context(["h2"]))
    service, provider = fcm_push(server, ca_file=certs.ca_file, **settings)
    return server, service, provider


# -- FCM transport faults ----------------------------------------------------------------

async def test_fcm_connection_reset_mid_request_is_retried_and_delivered_once(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler,
        store: MemoryPushLog) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    assert (await service.send(android_device("warm", token="warm"), message(clock))).delivered
    server.program("fcm-token-1", FCMReply(drop=True))  # the connection dies under it
    async with asyncio.timeout(5):
        result = await service.send(android_device(), message(clock))
    assert (result.outcome, result.attempts) == ("delivered", 2), result
    assert server.on_wire("fcm-token-1") == 2 and len(server.delivered("fcm-token-1")) == 1
    retry = next(a for a in store.attempts if a.device_id == "pixel")
    assert (retry.outcome, retry.status) == ("retry", 0)
    assert server.violations == []


async def test_fcm_every_connection_cut_is_retried_until_the_deadline(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    server.always("fcm-token-1", FCMReply(drop=True))
    async with asyncio.timeout(10):
        result = await service.send(android_device(), call(clock, ttl=5))
    assert result.outcome == "expired" and result.attempts >= 3
    assert server.delivered() == []


async def test_fcm_stall_on_a_shared_connection_times_out_and_is_retried(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler,
        store: MemoryPushLog) -> None:
    """One stream never answered while others flow on the same connection: the
    attempt's deadline fires anyway, the stream is reset, the retry is delivered."""
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs, request_timeout=0.5)
    busy = android_device("busy", token="busy")
    assert (await service.send(busy, message(clock))).delivered
    server.program("fcm-token-1", FCMReply(stall=True))
    stop = asyncio.Event()

    async def traffic() -> None:  # keeps the shared connection busy meanwhile
        while not stop.is_set():
            await service.send(busy, message(clock))
            await asyncio.sleep(0.02)

    other = asyncio.ensure_future(traffic())
    started = time.monotonic()
    try:
        async with asyncio.timeout(5):
            result = await service.send(android_device(), message(clock))
    finally:
        stop.set()
        await other
    assert (result.outcome, result.attempts) == ("delivered", 2), result
    assert 0.4 < time.monotonic() - started < 3
    assert server.on_wire("fcm-token-1") == 2 and len(server.delivered("fcm-token-1")) == 1
    first = next(a for a in store.attempts if a.device_id == "pixel")
    assert (first.outcome, first.status) == ("retry", 0) and "timed out" in first.reason
    assert server.connections == 1  # the connection itself was fine
    assert server.violations == []


# -- FCM OAuth token ---------------------------------------------------------------------

async def test_stalled_token_endpoint_never_holds_pushes_while_a_token_is_valid(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    assert (await service.send(android_device(), message(clock))).delivered
    first = server.sends[0].bearer
    server.stall_tokens()
    clock.advance(3600 - 200)  # due for renewal, still valid for 200 s
    devices = [android_device(f"p{i}", token=f"tok-{i}") for i in range(5)]
    async with asyncio.timeout(2):
        results = await asyncio.gather(*(service.send(d, message(clock)) for d in devices))
    assert all(r.delivered and r.attempts == 1 for r in results)
    assert {s.bearer for s in server.sends} == {first}
    await server.wait_token_requests(2)  # a renewal is under way, in the background
    assert server.tokens_answered == 1
    server.release_tokens()
    async with asyncio.timeout(5):
        while (await service.send(devices[0], message(clock))).delivered:
            if server.sends[-1].bearer != first:
                break  # the renewed token took over
            await asyncio.sleep(0.01)
    assert server.token_requests == 2 and server.violations == []


async def test_token_renewed_in_the_background_at_80_percent_of_its_life(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    assert (await service.send(android_device(), message(clock))).delivered
    clock.advance(0.79 * 3600)
    assert (await service.send(android_device(), message(clock))).delivered
    assert server.token_requests == 1
    clock.advance(0.02 * 3600)  # 81 %: the push goes at once, a renewal starts beside it
    assert (await service.send(android_device(), message(clock))).delivered
    await server.wait_token_requests(2)
    assert server.sends[2].bearer == server.sends[0].bearer


async def test_failing_token_endpoint_leaves_the_valid_token_in_use(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler) -> None:
    server, service, provider = await tls_fcm(fcm_server, fcm_push, certs)
    assert (await service.send(android_device(), message(clock))).delivered
    server.fail_tokens(*[400] * 20)  # e.g. a revoked key: refusals, not retried inside
    clock.advance(3600 - 120)
    for i in range(3):
        async with asyncio.timeout(2):
            assert (await service.send(android_device(), message(clock))).delivered
        await server.wait_token_requests(2 + i)  # a renewal was tried beside it, and
        await wait_for(lambda: provider.auth.last_error is not None  # failed; the next is
                    and provider.auth._refreshing is None)  # tried after a backoff
        clock.advance(10)
    assert len({s.bearer for s in server.sends}) == 1
    assert server.token_requests == 4 and server.tokens_answered == 1


async def test_without_a_valid_token_pushes_wait_for_it_within_their_deadline(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler,
        store: MemoryPushLog) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs, request_timeout=0.3)
    server.stall_tokens()  # from the very start: there is no token at all
    started = time.monotonic()
    async with asyncio.timeout(5):
        result = await service.send(android_device(), call(clock, ttl=2))
    assert result.outcome == "expired" and result.attempts >= 2
    assert time.monotonic() - started < 3  # each attempt waited at most its deadline
    assert server.sends == [] and server.wire == []
    assert server.token_requests == 1  # one renewal at a time, however many waited
    server.release_tokens()
    async with asyncio.timeout(5):
        result = await service.send(android_device(), call(clock))
    assert result.delivered


# -- APNs ----------------------------------------------------------------------------------

async def test_apns_stall_times_out_and_is_retried(apns_server: Any, apns_push: Any,
                                                   clock: ManualScheduler) -> None:
    server = await apns_server()
    service, _ = apns_push(server, request_timeout=0.3)
    server.program(VOIP, Reply(stall=True))
    async with asyncio.timeout(5):
        result = await service.send(ios_device(), call(clock))
    assert (result.outcome, result.attempts) == ("delivered", 2)
    assert server.on_wire(VOIP) == 2 and len(server.delivered()) == 1
    assert server.connections == 1


async def test_apns_connection_cut_mid_request_is_sent_again_once(
        apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    server = await apns_server()
    service, _ = apns_push(server)
    server.program(VOIP, Reply(drop=True))
    result = await service.send(ios_device(), call(clock))
    assert (result.outcome, result.attempts) == ("delivered", 2)
    assert server.on_wire(VOIP) == 2 and len(server.delivered()) == 1


async def test_apns_unreachable_then_back(apns_server: Any, apns_push: Any,
                                          clock: ManualScheduler, sleeps: Sleeps) -> None:
    server = await apns_server()
    server.down = True

    async def sleep(seconds: float) -> None:  # back after the third backoff
        await sleeps(seconds)
        if len(sleeps.seen) == 3:
            server.down = False

    service, _ = apns_push(server, service_options={"sleep": sleep})
    started = time.monotonic()
    result = await service.send(ios_device(), call(clock))
    assert (result.outcome, result.attempts) == ("delivered", 4)
    assert server.on_wire(VOIP) == 1
    # one connection tried per attempt (a reset connection once woke every waiting
    # request to connect again at once, in a loop, until its timeout)
    assert server.refused_connections == 3
    assert time.monotonic() - started < 2


# -- GOAWAY --------------------------------------------------------------------------------

async def test_goaway_mid_flight_resends_only_the_refused_streams_once(
        apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    server = await apns_server(response_delay=0.3)
    service, _ = apns_push(server)
    devices = [ios_device(f"d{i}", voip=f"{i:064x}") for i in range(10)]
    sends = [asyncio.ensure_future(service.send(d, call(clock))) for d in devices]
    await wait_for(lambda: len(server.wire) >= 10)
    (conn,) = server._conns
    promised = sorted(conn.streams)[4]
    conn.goaway(promised)  # the first five are processed, the last five refused
    results = await asyncio.gather(*sends)
    assert all(r.outcome == "delivered" and r.attempts == 1 for r in results)
    on_wire = count_by(server.wire, lambda w: w.headers["apns-id"])
    answered = count_by(server.requests, lambda r: r.headers["apns-id"])
    assert sorted(on_wire.values()) == [1] * 5 + [2] * 5
    assert set(answered.values()) == {1} and len(answered) == 10
    refused = {w.headers["apns-id"] for w in server.wire if w.stream_id > promised}
    assert {a for a, n in on_wire.items() if n == 2} == refused
    assert server.connections == 2 and server.violations == []


async def test_a_request_refused_twice_goes_back_to_the_service_backoff(
        apns_server: Any, apns_push: Any, clock: ManualScheduler, sleeps: Sleeps, store: MemoryPushLog) -> None:
    """Refused by GOAWAY: sent again once, on a new connection. Refused there too: the
    attempt failed and the service's backoff decides when to try again; one attempt
    never puts a request on the wire more than twice."""
    server = await apns_server()
    service, _ = apns_push(server)
    server.program(VOIP, Reply(goaway=True), Reply(goaway=True), Reply(goaway=True))
    result = await service.send(ios_device(), call(clock))
    assert result.delivered
    per_attempt = count_by([w for w in server.wire], lambda w: w.at)
    assert max(per_attempt.values()) <= 2, per_attempt
    assert server.on_wire(VOIP) == 4 and len(server.delivered()) == 1
    assert [a.outcome for a in store.attempts] == ["retry", "delivered"]
    assert sleeps.seen == [0.375]


async def test_goaway_every_few_requests_never_sends_a_processed_request_twice(
        apns_server: Any, apns_push: Any, clock: ManualScheduler) -> None:
    server = await apns_server(goaway_after=3)
    service, _ = apns_push(server)
    devices = [ios_device(f"d{i}", voip=f"{i:064x}") for i in range(10)]
    results = await asyncio.gather(*(service.send(d, call(clock)) for d in devices))
    assert all(r.outcome == "delivered" for r in results)
    answered = count_by(server.requests, lambda r: r.headers["apns-id"])
    assert len(answered) == 10 and set(answered.values()) == {1}
    assert server.answered == 10 and server.violations == []


async def test_fcm_goaway_resends_the_refused_request_once(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    assert (await service.send(android_device("warm", token="warm"), message(clock))).delivered
    server.program("fcm-token-1", FCMReply(goaway=True))
    result = await service.send(android_device(), message(clock))
    assert (result.outcome, result.attempts) == ("delivered", 1)
    assert server.on_wire("fcm-token-1") == 2 and len(server.delivered("fcm-token-1")) == 1
    assert server.connections == 2


async def test_fcm_goaway_under_load_delivers_each_push_once(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    server.goaway_after = 3  # every connection is sent away after three answers
    devices = [android_device(f"p{i}", token=f"tok-{i}") for i in range(20)]
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(service.send(d, message(clock)) for d in devices))
    assert all(r.delivered for r in results), {r.reason for r in results}
    delivered = count_by(server.delivered(), lambda s: s.message["token"])
    assert len(delivered) == 20 and set(delivered.values()) == {1}
    assert server.violations == []


async def test_fcm_connections_cut_under_load_deliver_each_push_once(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler) -> None:
    server, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    assert (await service.send(android_device("warm", token="warm"), message(clock))).delivered
    devices = [android_device(f"p{i}", token=f"tok-{i}") for i in range(30)]
    for d in devices[::3]:  # a third of them find their connection cut under them
        server.program(d.push_token, FCMReply(drop=True))
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(service.send(d, message(clock)) for d in devices))
    assert all(r.delivered for r in results), {r.reason for r in results}
    delivered = count_by(server.delivered(), lambda s: s.message["token"])
    assert len(delivered) == 31 and set(delivered.values()) == {1}


async def test_any_transport_exception_is_a_retry(
        fcm_server: Any, fcm_push: Any, certs: Any, clock: ManualScheduler,
        store: MemoryPushLog, monkeypatch: Any) -> None:
    """Whatever the transport raises (anyio.EndOfStream escaped the old FCM sender) is
    one failed attempt, never an exception out of send() and never a dropped push."""
    from sipwake.push.h2client import H2Pool

    class EndOfStream(Exception):
        """Like anyio's: no OSError, no H2Error (anyio is no dependency any more)."""

    _, service, _ = await tls_fcm(fcm_server, fcm_push, certs)
    real = H2Pool.post
    raised: list[int] = []

    async def post(self: H2Pool, *args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(1)
            raise EndOfStream
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(H2Pool, "post", post)
    result = await service.send(android_device(), message(clock))
    assert (result.outcome, result.attempts) == ("delivered", 2)
    assert store.attempts[0].outcome == "retry" and "EndOfStream" in store.attempts[0].reason
