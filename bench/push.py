"""APNs push throughput: sipwake's provider vs a bare h2 client, same server, same run.

    python bench/push.py [--count 20000] [--concurrency 200] [--rounds 2]

The local APNs stand-in (tests/helpers/apns_standin.py: full request checks, JWT
signature verified once per token and its age on every request) runs in a child
process; the clients run one at a time in this process, on one event loop (one
core). Printed:

- ceiling: a bare h2 client, requests prebuilt (headers with the JWT, path,
  apns-id; the same call payload), keeping `concurrency` streams in flight;
- sipwake: `PushService.send(device, CallNotification)` end to end — notification
  built, payload encoded, shared JWT, HTTP/2 pool, response classified, attempt
  recorded (to a store that drops it) — with `concurrency` sends in flight;

and sipwake / ceiling. Rounds alternate the two so drift on a shared machine
hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from sipwake.push import APNsProvider, APNsSettings, CallNotification, PushService  # noqa: E402
from sipwake.push.h2client import PlainEncoder, unique  # noqa: E402
from sipwake.store.models import Device, PushAttempt  # noqa: E402

TEAM, KID, BUNDLE = "TEAM123456", "KEY7654321", "com.example.dialer"

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]


def run(coro: object) -> object:
    if uvloop is not None:
        return uvloop.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- server (child process) ----------------------------------------------------------


def serve(key_pem: bytes, pipe: Connection) -> None:
    from tests.helpers.apns_standin import APNsStandIn

    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    async def main() -> None:
        server = APNsStandIn(team_id=TEAM, key_id=KID, public_key=key.public_key(),
                             topics={BUNDLE}, record=False)
        await server.start()
        pipe.send(server.port)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, pipe.recv)  # parent says stop
        pipe.send((server.answered, server.violations[:5], server.connections))
        await server.close()

    run(main())


# -- bare h2 client (the ceiling) ------------------------------------------------------


class BareClient(asyncio.Protocol):
    def __init__(self, requests: list[list[tuple[bytes, bytes]]], body: bytes,
                 concurrency: int) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        # Same bytes on the wire as sipwake: no Huffman, per-request values unindexed.
        self.conn.encoder = PlainEncoder()
        self.requests, self.body, self.concurrency = requests, body, concurrency
        self.next = 0
        self.blocked: list[int] = []  # streams waiting for flow-control window
        self.ok = 0
        self.done = 0
        self.finished = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._send_one()
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())

    def _send_one(self) -> None:
        if self.next >= len(self.requests):
            return
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, self.requests[self.next])
        self.next += 1
        if self.blocked or self.conn.local_flow_control_window(sid) < len(self.body):
            self.blocked.append(sid)
        else:
            self.conn.send_data(sid, self.body, end_stream=True)

    def _unblock(self) -> None:
        while self.blocked and self.conn.local_flow_control_window(self.blocked[0]) >= len(
                self.body):
            self.conn.send_data(self.blocked.pop(0), self.body, end_stream=True)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.ok += dict(event.headers).get(b":status") == b"200"
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id or 0)
            elif isinstance(event, h2.events.StreamEnded):
                self.done += 1
                self._send_one()
            elif isinstance(event, h2.events.WindowUpdated):
                self._unblock()
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())
        if self.done == len(self.requests) and not self.finished.done():
            self.finished.set_result(None)


async def bare(port: int, key: ec.EllipticCurvePrivateKey, payload: bytes, count: int,
               concurrency: int) -> tuple[float, int]:
    token = jwt.encode({"iss": TEAM, "iat": int(time.time())}, key, algorithm="ES256",
                       headers={"kid": KID})
    auth = b"bearer " + token.encode()
    expiration = str(int(time.time()) + 30).encode()
    authority = f"127.0.0.1:{port}".encode()
    requests = [[
        (b":method", b"POST"), (b":scheme", b"http"), (b":authority", authority),
        unique(b":path", b"/3/device/%064x" % i), (b"authorization", auth),
        (b"apns-push-type", b"voip"), (b"apns-topic", BUNDLE.encode() + b".voip"),
        (b"apns-priority", b"10"), unique(b"apns-expiration", expiration),
        unique(b"apns-collapse-id", b"park-%d" % i), unique(b"apns-id", str(uuid.uuid4()).encode()),
    ] for i in range(count)]
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: BareClient(requests, payload, concurrency), "127.0.0.1", port)
    await asyncio.sleep(0.05)  # let the SETTINGS exchange finish before timing
    started = time.perf_counter()
    client.start()
    await client.finished
    elapsed = time.perf_counter() - started
    assert client.transport is not None
    client.transport.close()
    return count / elapsed, client.ok


# -- sipwake -----------------------------------------------------------------------------


class DropStore:
    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool:
        return False

    async def add_push_attempt(self, attempt: PushAttempt) -> None:
        return None


async def sipwake(port: int, key_file: str, count: int, concurrency: int) -> tuple[float, int]:
    provider = APNsProvider(APNsSettings(
        team_id=TEAM, key_id=KID, key_file=key_file, topic=BUNDLE,
        url=f"http://127.0.0.1:{port}", sandbox_url=f"http://127.0.0.1:{port}",
        allow_insecure=True))
    service = PushService(DropStore(), apns=provider)
    devices = [Device(device_id=f"d{i}", aor="sip:alice@example.com", provider="apns",
                      platform="ios", push_token="a" * 64, voip_token=f"{i:064x}",
                      topic=BUNDLE) for i in range(count)]
    expires = int(time.time()) + 30
    # warm up: connection, JWT
    await service.send(devices[0], CallNotification(
        call_id="warm", caller_uri="sip:bob@example.com", caller_number="+15551234",
        caller_name="Bob Builder", pickup_uri="sip:pickup-warm@example.com", expires_at=expires))
    delivered = 0
    next_index = 0

    async def worker() -> None:
        nonlocal delivered, next_index
        while next_index < count:
            i = next_index
            next_index += 1
            n = CallNotification(call_id=f"park-{i}", caller_uri="sip:bob@example.com",
                                 caller_number="+15551234", caller_name="Bob Builder",
                                 pickup_uri=f"sip:pickup-park-{i}@example.com",
                                 expires_at=expires)
            result = await service.send(devices[i], n)
            delivered += result.outcome == "delivered"

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await service.close()
    return count / elapsed, delivered


def call_payload() -> bytes:
    from sipwake.push import apns_payload

    n = CallNotification(call_id="park-0", caller_uri="sip:bob@example.com",
                         caller_number="+15551234", caller_name="Bob Builder",
                         pickup_uri="sip:pickup-park-0@example.com",
                         expires_at=int(time.time()) + 30)
    device = Device(device_id="d", aor="a", provider="apns", platform="ios",
                    voip_token="b" * 64, topic=BUNDLE)
    return apns_payload.build(device, n, BUNDLE).body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = tempfile.mkdtemp()
    key_file = os.path.join(tmp, "AuthKey.p8")
    Path(key_file).write_bytes(pem)

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(pem, child), daemon=True)
    server.start()
    port = parent.recv()
    payload = call_payload()
    print(f"event loop: {'uvloop' if uvloop else 'asyncio'}; {args.count} call pushes per run, "
          f"{args.concurrency} in flight, {len(payload)}-byte VoIP payload; "
          f"server: APNs stand-in in a child process")

    ceilings: list[float] = []
    ours: list[float] = []
    our_cpu: list[float] = []
    bare_cpu: list[float] = []
    for round_no in range(1, args.rounds + 1):
        cpu = time.process_time()
        ceiling, ok = run(bare(port, key, payload, args.count, args.concurrency))  # type: ignore[misc]
        bare_us = (time.process_time() - cpu) / args.count * 1e6
        assert ok == args.count, f"bare client: only {ok} of {args.count} accepted"
        cpu = time.process_time()
        rate, ok = run(sipwake(port, key_file, args.count, args.concurrency))  # type: ignore[misc]
        our_us = (time.process_time() - cpu) / args.count * 1e6
        assert ok == args.count, f"sipwake: only {ok} of {args.count} delivered"
        ceilings.append(ceiling)
        ours.append(rate)
        our_cpu.append(our_us)
        bare_cpu.append(bare_us)
        print(f"round {round_no}: bare h2 {ceiling:6.0f} req/s ({bare_us:4.0f} us CPU/req) | "
              f"sipwake {rate:6.0f} notifications/s ({our_us:4.0f} us CPU/notification) | "
              f"ratio {rate / ceiling:.2f}")

    parent.send("stop")
    answered, violations, connections = parent.recv()
    server.join(5)
    best_ceiling, best_ours = max(ceilings), max(ours)
    print(f"server answered {answered} requests on {connections} connections; "
          f"violations: {violations or 'none'}")
    print(f"ceiling (bare h2 client, best):  {best_ceiling:6.0f} req/s")
    print(f"sipwake APNs provider (best):    {best_ours:6.0f} notifications/s "
          f"(target >= 3000; aioapns claims ~1300/core)")
    print(f"ratio sipwake/ceiling: {best_ours / best_ceiling:.2f}")
    print(f"sipwake client CPU: {min(our_cpu):.0f} us/notification, i.e. about "
          f"{1e6 / min(our_cpu):.0f} notifications/s per core if the server kept up; "
          f"{min(our_cpu) / min(bare_cpu):.2f}x the bare client's {min(bare_cpu):.0f} us/req")


if __name__ == "__main__":
    main()
