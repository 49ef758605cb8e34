"""REGISTER throughput of a cluster: `serve --workers 2` vs `--workers 1` on this machine,
and two separate nodes sharing PostgreSQL + Redis, side by side in one run.

Every configuration is a cluster's (PostgreSQL store in a fresh schema, Redis bus,
one secret), so the comparison is of processes, not of stores; "alone" is one node
without Redis, for what the cluster itself costs. Besides the rate, the server's CPU
per transaction (its processes' /proc times): on a machine whose cores SIPp and
PostgreSQL share with the server, that is the steadier figure. The load is SIPp,
closed loop, REGISTER with digest and RFC 8599 parameters, every user distinct
(the scenario the SIPp test uses); one socket per call (`-t un`) so the kernel can
spread sources over the workers. For two nodes, two SIPp instances each load one.
Rounds alternate between the configurations; medians are the figures.

    python bench/cluster.py [--users 10000] [--rounds 3] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from register import AUTH, DOMAIN, cpu_seconds, last_count, user_file, wait_udp  # noqa: E402

from tests.helpers.ports import free_port  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


def provision(url: str, users: int) -> None:
    from sipwake.sip.digest import ha1
    from sipwake.store import open_store
    from sipwake.store.models import User

    async def go() -> None:
        store = await open_store(url)
        for first in range(0, users, 1000):
            await asyncio.gather(*(
                store.put_user(User(f"u{i}", DOMAIN, ha1(f"u{i}", DOMAIN, f"p{i}"),
                                    ha1(f"u{i}", DOMAIN, f"p{i}", "SHA-256")))
                for i in range(first, min(users, first + 1000))
            ))  # fmt: skip
        await store.close()

    asyncio.run(go())


async def _schema(action: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f"{action} SCHEMA {name}{' CASCADE' if action == 'DROP' else ''}")
    finally:
        await conn.close()


class Node:
    """`sipwake serve` (from this checkout) with a cluster configuration."""

    def __init__(
        self, tmp: Path, name: str, store: str, secret: str, workers: int, cluster: bool = True
    ) -> None:
        self.port = free_port(socket.SOCK_DGRAM)  # and TCP on the same number
        config = tmp / f"{name}.toml"
        config.write_text(
            f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:{self.port}", '
            f'"tcp:127.0.0.1:{self.port}"]\nsecret = "{secret}"\nsource_rate = 0\n'
            f'[http]\nlisten = "127.0.0.1:{free_port()}"\n[store]\nurl = "{store}"\n'
            + (f'[cluster]\nredis_url = "{REDIS}"\n' if cluster else "")
            + '[log]\nlevel = "WARNING"\n'
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipwake.cli", "serve", "--config", str(config),
             "--workers", str(workers)], env=env,
        )  # fmt: skip
        wait_udp(self.port, timeout=30)
        time.sleep(2.0)  # every worker up (the first answers before the others bind)

    def cpu(self) -> float:
        """CPU seconds of the node: the process and its workers."""
        pids = [self.proc.pid, *children(self.proc.pid)]
        return sum(cpu_seconds(p) for p in pids)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def load(
    ports: list[int], infs: list[Path], calls: int, concurrency: int
) -> tuple[float, int, int]:
    """SIPp against each port at once; (seconds, successful, failed) in all."""
    procs = []
    start = time.perf_counter()
    for port, inf in zip(ports, infs, strict=True):
        cmd = [
            shutil.which("sipp") or "sipp", f"127.0.0.1:{port}", "-i", "127.0.0.1", "-p", "0",
            "-sf", str(AUTH), "-inf", str(inf), "-m", str(calls),
            "-l", str(concurrency), "-r", "100000", "-rp", "1000",
            "-t", "un", "-max_socket", "5000",  # a socket per call: sources to spread
            "-nostdin", "-timeout", "120s", "-timeout_error", "-max_recv_loops", "10000",
            "-max_sched_loops", "10000",
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, cwd=inf.parent))  # fmt: skip
    outs = [p.communicate()[0] for p in procs]
    for out in outs:
        if not last_count(out, "Successful call"):
            print("SIPp:", out[-1000:])
    elapsed = time.perf_counter() - start
    ok = sum(last_count(o, "Successful call") for o in outs)
    failed = sum(last_count(o, "Failed call") for o in outs)
    return elapsed, ok, failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10000, help="per round and node")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sipwake-cluster-bench-"))
    schema = f"bench_{secrets.token_hex(4)}"
    asyncio.run(_schema("CREATE", schema))
    store = f"{PG}?schema={schema}"
    # name → (worker processes per node, nodes, a cluster's configuration)
    configs = {
        "alone": (1, 1, False),  # no Redis: what the cluster costs
        "workers=1": (1, 1, True),
        "workers=2": (2, 1, True),
        "2 nodes": (1, 2, True),
    }
    total = args.users * args.rounds * sum(n for _, n, _ in configs.values())
    t = time.perf_counter()
    provision(store, total)
    print(f"provisioned {total} users in PostgreSQL in {time.perf_counter() - t:.1f}s")
    rates: dict[str, list[float]] = {name: [] for name in configs}
    cpu_us: dict[str, list[float]] = {name: [] for name in configs}
    next_user = 0
    try:
        for r in range(args.rounds):
            for name, (workers, count, cluster) in configs.items():
                secret = f"bench-{r}-{name}"
                nodes = [Node(tmp, f"n{r}{name}{i}".replace(" ", "").replace("=", ""), store,
                              secret, workers, cluster) for i in range(count)]  # fmt: skip
                try:
                    infs = []
                    for i, _ in enumerate(nodes):
                        infs.append(user_file(tmp / f"r{r}{name}{i}.csv".replace(" ", ""),
                                              next_user, args.users))  # fmt: skip
                        next_user += args.users
                    cpu = sum(n.cpu() for n in nodes)
                    secs, ok, failed = load([n.port for n in nodes], infs, args.users,
                                            args.concurrency)  # fmt: skip
                    cpu = sum(n.cpu() for n in nodes) - cpu
                finally:
                    for n in nodes:
                        n.stop()
                tx = 2 * ok  # 401 challenge + authenticated REGISTER
                rates[name].append(tx / secs)
                cpu_us[name].append(cpu / max(1, tx) * 1e6)
                note = f" ({failed} failed)" if failed else ""
                print(f"round {r + 1} {name:10s}: {tx / secs:7.0f} REGISTER tx/s, "
                      f"server CPU {cpu_us[name][-1]:4.0f} us/tx{note}", flush=True)  # fmt: skip
    finally:
        asyncio.run(_schema("DROP", schema))
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(rates["workers=1"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:10s}: {median:7.0f} REGISTER tx/s (median of {args.rounds}), "
              f"x{median / base:.2f} of one worker; server CPU "
              f"{statistics.median(cpu_us[name]):4.0f} us per transaction")  # fmt: skip
    print(f"(this machine: {os.cpu_count()} cores, shared by SIPp, PostgreSQL and the server)")


if __name__ == "__main__":
    main()
