"""kill -9 durability: MESSAGEs under random SIGKILLs, on SQLite and on PostgreSQL.

    python bench/faults.py [--messages 2000] [--kills 6] [--backends sqlite,postgresql]

For each backend: the installed `sipwake serve` takes a stream of CPIM MESSAGEs (each
with its IMDN Message-ID) for bob, whose phone is registered and answers every
delivery 200. At random moments the server is killed with SIGKILL and started again;
the sender resends whatever got no answer (as a UAC would), the phone registers
again. At the end it prints, per backend:

- acked: messages that got a 2xx; lost: acked but not stored (must be 0);
- stored twice: one IMDN id stored more than once (must be 0: resends are collapsed);
- delivered: ids the phone received; missing: stored but never delivered (must be 0);
- delivered twice: ids received more than once — a kill between the phone's 2xx and
  the commit of its mark makes a delivery at-least-once; a clean stop never does.

PostgreSQL: 127.0.0.1:5432 database `test` (trust), a schema of its own, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.agent import Agent, respond
from tests.helpers.message_load import MessageLoad
from tests.helpers.messaging import cpim
from tests.helpers.ports import free_port

DOMAIN = "example.com"
PG = "postgresql://postgres@127.0.0.1:5432/test"
INSTANCE = ';+sip.instance="<urn:uuid:00000000-0000-4000-8000-0000000fa175>"'


class Phone:
    """bob's phone: registers after every start, answers each delivery 200, counts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: collections.Counter[str] = collections.Counter()
        self.agent: Agent | None = None
        self.task: asyncio.Task[None] | None = None

    async def register(self) -> None:
        if self.agent is not None:
            self.close()
        self.agent = await Agent("bob", "secret", DOMAIN, ("127.0.0.1", self.port)).start()
        self.task = asyncio.ensure_future(self._answer(self.agent))
        for _ in range(20):
            try:
                if (await self.agent.register(header_params=INSTANCE)).status == 200:
                    return
            except TimeoutError:
                continue

    async def _answer(self, agent: Agent) -> None:
        seen: set[str] = set()
        while True:
            req = await agent.requests.get()
            respond(agent, req, 200)
            if req.method == "MESSAGE" and req.call_id not in seen:
                seen.add(req.call_id)
                imdn = req.body.split(b"imdn.Message-ID: ", 1)[1].split(b"\r\n", 1)[0]
                self.received[imdn.decode()] += 1

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.agent is not None:
            self.agent.close()


class Faults:
    """The killer: SIGKILLs the server once the 2xx answers reach each threshold."""

    def __init__(self, server: asyncio.subprocess.Process, thresholds: list[int]) -> None:
        self.server = server
        self.thresholds = thresholds
        self.acked: set[str] = set()
        self.killed = 0
        self.load: MessageLoad | None = None

    def on_final(self, key: str, status: int) -> None:
        if 200 <= status < 300:
            self.acked.add(key)
        if self.killed == len(self.thresholds) or len(self.acked) < self.thresholds[self.killed]:
            return
        if self.server.returncode is None and self.load is not None and not self.load.stopped:
            self.server.send_signal(signal.SIGKILL)  # requests in flight, deliveries too
            self.killed += 1
            self.load.stop()
            print(f"  kill {self.killed} after {len(self.acked)} acked", file=sys.stderr,
                  flush=True)  # fmt: skip


async def serve(sipwake: str, config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sipwake, "serve", "--config", str(config), stdout=out, stderr=out,
            env={k: v for k, v in os.environ.items() if not k.startswith("SIPWAKE_")},
        )  # fmt: skip
    return proc


async def answering(port: int) -> None:
    probe = await Agent("probe", "", DOMAIN, ("127.0.0.1", port)).start()
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    await probe.request("OPTIONS", f"sip:{DOMAIN}", timeout=0.2)
                    return
                except TimeoutError:
                    continue
    finally:
        probe.close()


async def stored_ids(url: str) -> list[str]:
    from sipwake.store import open_store

    store = await open_store(url)
    try:
        return [m.imdn_id for m in await store.messages(f"sip:bob@{DOMAIN}", 0, 10**6)]
    finally:
        await store.close()


async def run(backend: str, messages: int, kills: int, rng: random.Random) -> dict[str, int]:
    sipwake = str(Path(sys.executable).parent / "sipwake")
    tmp = Path(tempfile.mkdtemp(prefix=f"sipwake-faults-{backend}-"))
    schema = f"faults_{secrets.token_hex(4)}"
    url = f"sqlite:///{tmp}/faults.db" if backend == "sqlite" else f"{PG}?schema={schema}"
    port = free_port(socket.SOCK_DGRAM)
    config = tmp / "sipwake.toml"
    config.write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:{port}"]\n'
        'trusted_peers = ["127.0.0.1"]\nsecret = "faults"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port(socket.SOCK_STREAM)}"\n'
        f'[store]\nurl = "{url}"\n[messages]\nsender_rate = 0.0\ninbox_cap = 0\n'
        '[log]\nlevel = "WARNING"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sipwake, "user", "add", "bob", "--password", "secret", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()
    items = [(f"m{i:05d}", cpim(f"fault message {i}", f"m{i:05d}"), "message/cpim")
             for i in range(messages)]  # fmt: skip
    log = tmp / "server.log"
    server = await serve(sipwake, config, log)
    await answering(port)
    phone = Phone(port)
    await phone.register()
    faults = Faults(server, sorted(rng.sample(range(messages // 20, messages), kills)))
    try:
        left = items
        while left:
            load = await MessageLoad(("127.0.0.1", port), DOMAIN, window=50,
                                     on_final=faults.on_final).start()  # fmt: skip
            faults.load = load
            kills_before = faults.killed
            await load.run("bob", left)
            load.close()
            if faults.killed > kills_before:
                await faults.server.wait()
                faults.server = await serve(sipwake, config, log)
                await answering(port)
                await phone.register()
            left = [item for item in items if item[0] not in faults.acked]
        stored = await stored_ids(url)
        async with asyncio.timeout(120):  # until every stored one reached the phone
            while set(stored) - set(phone.received):
                await phone.register()
                await asyncio.sleep(1)
    finally:
        phone.close()
        if faults.server.returncode is None:
            faults.server.terminate()
            await faults.server.wait()
        if backend == "postgresql":
            conn = await asyncpg.connect(PG)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    counts = collections.Counter(stored)
    return {
        "messages": messages,
        "kills": faults.killed,
        "acked": len(faults.acked),
        "lost": len(faults.acked - set(stored)),
        "stored twice": sum(1 for n in counts.values() if n > 1),
        "delivered": len(phone.received),
        "missing": len(set(stored) - set(phone.received)),
        "delivered twice": sum(1 for n in phone.received.values() if n > 1),
        "tracebacks": log.read_text(errors="replace").count("Traceback"),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"seed {args.seed}")
    failed = False
    for backend in args.backends.split(","):
        result = await run(backend, args.messages, args.kills, random.Random(args.seed))
        print(f"{backend:10} " + ", ".join(f"{k} {v}" for k, v in result.items()))
        failed |= bool(result["lost"] or result["stored twice"] or result["missing"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
