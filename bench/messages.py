"""Inbox throughput: MESSAGEs stored + 202 per second for an offline user, delivery
rate when that user registers, beside the REGISTER-only rate, all in one run against
one `sipwake serve` (SQLite) on this machine.

  1. store: a closed-loop UDP sender keeps `--window` RCS-style MESSAGEs (CPIM with an
     IMDN Message-ID) in flight to one offline user with a push device; each is parsed,
     committed to SQLite (group commit) and answered 202; pushes are coalesced (sink).
  2. delivery: the user registers; the server sends the whole backlog to it (a few
     transactions in flight) and marks each delivered; a lean UDP phone answers 200.
  3. REGISTER: the SIPp digest scenario of bench/register.py (401 + authenticated
     REGISTER, distinct users, bindings written to SQLite).

    python bench/messages.py [--messages 20000] [--window 200] [--users 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

import register as register_bench  # noqa: E402 - bench/register.py, beside this file

from sipwake.store import open_store  # noqa: E402
from sipwake.store.models import Device  # noqa: E402
from tests.helpers.agent import Agent  # noqa: E402
from tests.helpers.message_load import MessageLoad  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402

DOMAIN = register_bench.DOMAIN
BOB = f"sip:bob@{DOMAIN}"


def cpim(i: int) -> bytes:
    return (
        f'From: "Alice" <sip:alice@{DOMAIN}>\r\nTo: <{BOB}>\r\n'
        "NS: imdn <urn:ietf:params:imdn>\r\n"
        f"imdn.Message-ID: m{i:08d}\r\nimdn.Disposition-Notification: positive-delivery\r\n"
        "\r\nContent-Type: text/plain;charset=UTF-8\r\n\r\n"
        f"Message {i}: are we still on for lunch? 🍜"
    ).encode()


class Phone(Agent):
    """The woken app: answers each MESSAGE 200 straight from the bytes."""

    keep = (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")
    received = 0
    done: asyncio.Event
    expected = 0

    def _incoming(self, data: bytes) -> None:
        if not data.startswith(b"MESSAGE "):
            super()._incoming(data)
            return
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        lines = [b"SIP/2.0 200 OK"]
        lines += [h for h in head[1:] if h.split(b":", 1)[0].strip().lower() in self.keep]
        lines.append(b"Content-Length: 0\r\n\r\n")
        self.send_raw(b"\r\n".join(lines))
        self.received += 1
        if self.received >= self.expected:
            self.done.set()


async def add_device(db: Path) -> None:
    store = await open_store(f"sqlite:///{db}")
    await store.put_device(Device("bench-iphone", BOB, "apns", "ios",
                                  push_token=secrets.token_hex(32), topic="com.example.dialer"))
    await store.close()


async def store_rate(port: int, count: int, window: int) -> tuple[float, int]:
    load = await MessageLoad(("127.0.0.1", port), DOMAIN, sender="alice", window=window).start()
    warm = [(f"w{i}", cpim(-i), "message/cpim") for i in range(500)]
    await load.run("u0", warm)  # another user: not part of bob's backlog
    items = [(f"m{i}", cpim(i), "message/cpim") for i in range(count)]
    load.finals.clear()
    started = time.perf_counter()
    await load.run("bob", items)
    elapsed = time.perf_counter() - started
    load.close()
    ok = sum(1 for s in load.finals.values() if s == 202)
    return elapsed, ok


async def delivery_rate(port: int, count: int) -> tuple[float, int]:
    phone = await Phone("bob", "pbob", DOMAIN, ("127.0.0.1", port)).start()
    phone.done = asyncio.Event()
    phone.expected = count
    started = time.perf_counter()
    resp = await phone.register(header_params=';+sip.instance="<urn:uuid:bench-phone>"')
    assert resp.status == 200, resp
    try:
        async with asyncio.timeout(300):
            await phone.done.wait()
    except TimeoutError:
        pass
    elapsed = time.perf_counter() - started
    phone.close()
    return elapsed, phone.received


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sipwake-bench-msg-"))
    db = tmp / "bench.db"
    register_bench.provision(db, args.users)  # u0 … u{n-1}, password p<i>
    from sipwake.sip.digest import ha1
    from sipwake.store.models import User

    async def more_users() -> None:
        store = await open_store(f"sqlite:///{db}")
        for name in ("bob", "alice"):
            await store.put_user(User(name, DOMAIN, ha1(name, DOMAIN, f"p{name}"),
                                      ha1(name, DOMAIN, f"p{name}", "SHA-256")))
        await store.close()

    asyncio.run(more_users())
    asyncio.run(add_device(db))
    inf = tmp / "users.csv"
    lines = ["SEQUENTIAL"] + [
        f"u{i};p{i};{DOMAIN};{i:08x}{'ab' * 28};[authentication username=u{i} password=p{i}]"
        for i in range(args.users)
    ]
    inf.write_text("\n".join(lines) + "\n")

    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    (tmp / "bench.toml").write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:{sip_port}"]\n'
        'secret = "bench"\ntrusted_peers = ["127.0.0.1"]\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'[store]\nurl = "sqlite:///{db}"\n'
        "[messages]\nsender_rate = 0.0\ninbox_cap = 1000000\n"  # cap on, above the burst

        '[log]\nlevel = "WARNING"\n'
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "sipwake.cli", "serve", "--config", str(tmp / "bench.toml")],
        env=env,
    )
    try:
        register_bench.wait_udp(sip_port)
        s_s, s_ok = asyncio.run(store_rate(sip_port, args.messages, args.window))
        d_s, d_ok = asyncio.run(delivery_rate(sip_port, args.messages))
        register_bench.run_sipp(sip_port, register_bench.AUTH, inf, 500, args.concurrency)
        r_s, r_ok, r_fail = register_bench.run_sipp(
            sip_port, register_bench.AUTH, inf, args.users, args.concurrency
        )
    finally:
        server.terminate()
        server.wait(10)

    stored = s_ok / s_s
    delivered = d_ok / d_s
    regs = r_ok / r_s
    tps = 2 * regs
    print(f"MESSAGE stored : {stored:8.0f} /s  ({s_ok} of {args.messages} got 202, "
          f"window {args.window}, CPIM + IMDN, offline user with a push device, SQLite)")
    print(f"delivery       : {delivered:8.0f} /s  ({d_ok} of {args.messages} delivered on "
          "REGISTER, in order, marked per device)")
    print(f"REGISTER       : {tps:8.0f} transactions/s = {regs:.0f} registrations/s "
          f"({r_ok} ok, {r_fail} failed; digest, distinct users, SQLite)")
    print(f"ratios         : stored/REGISTER tx {stored / tps:.2f}, "
          f"delivered/REGISTER tx {delivered / tps:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
