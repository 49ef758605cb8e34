"""REGISTER throughput: sipwake (digest auth on, distinct users, SQLite) vs. a bare echo.

The load generator is SIPp, closed loop (a fixed number of registrations in flight),
on the same 2-core machine. In the same run it measures:
  1. sipwake: REGISTER → 401 → REGISTER with credentials → 200 (2 transactions each),
     every user distinct, push parameters in the Contact, bindings written to SQLite;
  2. a minimal uvloop UDP responder that answers every REGISTER with a bare 200.
The figure is the ratio of transactions/s.

    python bench/register.py [--users 20000] [--rounds 3] [--concurrency 200] [--profile FILE]

Rounds alternate echo and sipwake, each round with users not registered before; the
medians are the figures. [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
DOMAIN = "bench.example"
AUTH = ROOT / "tests" / "sipp" / "register_auth.xml"  # the scenario the SIPp test uses
BARE = HERE / "register_bare.xml"

from tests.helpers.ports import free_port  # noqa: E402 - after the sys.path line


# ------------------------------------------------------------ the echo responder
def echo_main(port: int) -> None:
    """Answer every request with 200 OK, copying the headers a response needs."""
    keep = (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            lines = [b"SIP/2.0 200 OK"]
            for line in head[1:]:
                if line.split(b":", 1)[0].strip().lower() in keep:
                    lines.append(line)
            lines.append(b"Content-Length: 0\r\n\r\n")
            self.t.sendto(b"\r\n".join(lines), addr)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# ------------------------------------------------------------------- the bench
def provision(db: Path, users: int) -> None:
    from sipwake.sip.digest import ha1
    from sipwake.store import open_store
    from sipwake.store.models import User

    async def go() -> None:
        store = await open_store(f"sqlite:///{db}")
        batch = [
            store.put_user(
                User(f"u{i}", DOMAIN, ha1(f"u{i}", DOMAIN, f"p{i}"),
                     ha1(f"u{i}", DOMAIN, f"p{i}", "SHA-256"))
            )
            for i in range(users)
        ]  # fmt: skip
        await asyncio.gather(*batch)
        await store.close()

    asyncio.run(go())


def run_sipp(
    port: int, scenario: Path, inf: Path, calls: int, concurrency: int
) -> tuple[float, int, int]:
    """Returns (seconds, successful, failed) for `calls` registrations."""
    cmd = [
        shutil.which("sipp") or "sipp", f"127.0.0.1:{port}", "-i", "127.0.0.1", "-p", "0",
        "-sf", str(scenario), "-inf", str(inf), "-m", str(calls),
        "-l", str(concurrency), "-r", "100000", "-rp", "1000", "-t", "u1",
        "-nostdin", "-timeout", "120s", "-timeout_error", "-max_recv_loops", "10000",
        "-max_sched_loops", "10000",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=inf.parent, check=False)
    elapsed = time.perf_counter() - start
    out = proc.stdout
    ok = last_count(out, "Successful call")
    failed = last_count(out, "Failed call")
    return elapsed, ok, failed


def last_count(out: str, label: str) -> int:
    counts = re.findall(rf"{label}\s+\|\s+\d+\s+\|\s+(\d+)", out)
    return int(counts[-1]) if counts else 0


def wait_udp(port: int, timeout: float = 15.0) -> None:
    """Until the server answers an OPTIONS on that port."""
    msg = (
        f"OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKw\r\n"
        f"From: <sip:w@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: w\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(msg, ("127.0.0.1", port))
            try:
                s.recv(4096)
                return
            except OSError:
                continue
    raise RuntimeError(f"nothing answers on udp {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def user_file(path: Path, first: int, count: int) -> Path:
    lines = ["SEQUENTIAL"] + [
        f"u{i};p{i};{DOMAIN};{i:08x}{'ab' * 28};[authentication username=u{i} password=p{i}]"
        for i in range(first, first + count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20000, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--profile", metavar="FILE",
                        help="py-spy samples of the server, FILE.roundN (raw)")
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        echo_main(args.echo)
        return

    tmp = Path(tempfile.mkdtemp(prefix="sipwake-bench-"))
    db = tmp / "bench.db"
    warm = 500
    total = warm + args.users * args.rounds
    t = time.perf_counter()
    provision(db, total)
    print(f"provisioned {total} users in {time.perf_counter() - t:.1f}s")
    warm_inf = user_file(tmp / "warm.csv", 0, warm)
    # every round registers users never seen before: the cold path, every time
    round_inf = [
        user_file(tmp / f"round{r}.csv", warm + r * args.users, args.users)
        for r in range(args.rounds)
    ]

    sip_port, http_port, echo_port = (free_port(socket.SOCK_DGRAM), free_port(),
                                       free_port(socket.SOCK_DGRAM))
    (tmp / "bench.toml").write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:{sip_port}"]\n'
        # SIPp is one address sending thousands a second: no per-address rate limit
        f'secret = "bench"\nsource_rate = 0\n[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'[store]\nurl = "sqlite:///{db}"\n[log]\nlevel = "WARNING"\n'
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "sipwake.cli", "serve", "--config", str(tmp / "bench.toml")],
        env=env,
    )
    echo = subprocess.Popen([sys.executable, __file__, "--echo", str(echo_port)], env=env)
    echo_rates: list[float] = []
    rates: list[float] = []
    cpu_us: list[float] = []  # server CPU per REGISTER transaction: steadier than rates
    try:
        wait_udp(sip_port)
        wait_udp(echo_port)
        run_sipp(echo_port, BARE, warm_inf, warm, args.concurrency)  # warm-up, not counted
        run_sipp(sip_port, AUTH, warm_inf, warm, args.concurrency)
        # rounds alternate, so both sides see the same machine (other load, thermals)
        for r, inf in enumerate(round_inf):
            e_s, e_ok, e_fail = run_sipp(echo_port, BARE, inf, args.users, args.concurrency)
            spy = None
            if args.profile:
                out = f"{args.profile}.round{r + 1}"
                extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()  # e.g. --gil
                spy = subprocess.Popen(["py-spy", "record", "-p", str(server.pid), "-r", "500",
                                        "-f", "raw", "-o", out, "--nonblocking", *extra])
            cpu = cpu_seconds(server.pid)
            s_s, s_ok, s_fail = run_sipp(sip_port, AUTH, inf, args.users, args.concurrency)
            cpu_us.append((cpu_seconds(server.pid) - cpu) / (2 * s_ok) * 1e6)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            if e_fail or s_fail:
                print(f"round {r + 1}: failures: echo {e_fail}, sipwake {s_fail}")
            echo_rates.append(e_ok / e_s)
            rates.append(2 * s_ok / s_s)  # 401 challenge + authenticated REGISTER
            print(f"round {r + 1}: echo {echo_rates[-1]:8.0f} tx/s   sipwake {rates[-1]:6.0f} "
                  f"REGISTER tx/s   ratio {rates[-1] / echo_rates[-1]:.2f}   "
                  f"server CPU {cpu_us[-1]:.0f} us/tx   "
                  f"server RSS {rss_mib(server.pid):.0f} MiB")  # fmt: skip
    finally:
        server.terminate()
        echo.terminate()
        server.wait(10)
        echo.wait(10)

    echo_tps, tps = statistics.median(echo_rates), statistics.median(rates)
    print(f"echo responder : {echo_tps:8.0f} transactions/s (median of {args.rounds})")
    print(
        f"sipwake        : {tps:8.0f} REGISTER transactions/s = {tps / 2:.0f} registrations/s "
        f"(median of {args.rounds}; auth on, distinct users, SQLite)"
    )
    print(f"ratio          : {tps / echo_tps:.2f}")
    print(f"server CPU     : {statistics.median(cpu_us):8.0f} us per REGISTER transaction "
          f"(median; all threads; a 2-core machine also runs SIPp)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
