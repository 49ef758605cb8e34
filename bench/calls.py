"""Call throughput and latency: sipwake proxying and parking calls, beside SIPp alone.

    python bench/calls.py [--users 2000] [--concurrency 50] [--baseline-concurrency 200]
                          [--seconds 8] [--gc] [--profile PREFIX]

One run, on this machine, measures side by side (SIPp is the caller every time; closed
loop: a fixed number of calls in flight, no rate limit, calls completed / elapsed):

1. baseline: SIPp UAC -> SIPp UAS directly (`-sn uac` / `-sn uas`), calls/s;
2. proxied: SIPp UAC -> sipwake -> a registered callee: a SIPp UAS whose users
   c0..cN were registered (digest) from the UAS's port just before it started;
3. parked: SIPp UAC -> sipwake, callee asleep: 180, APNs VoIP push over h2c to the
   strict stand-in (tests/helpers/apns_standin.py) -> the woken device REGISTERs ->
   sipwake forwards the parked INVITE -> 180/200 -> ACK -> BYE -> 200 -> the device
   un-REGISTERs (asleep again): flows/s at max, then a run rate-limited to half that;
4. sipwake's own latencies (GET /v1/admin/stats): INVITE in -> push out (the h2
   request written to the APNs socket), REGISTER in -> parked INVITE out, p50/p99 at
   half the max parked rate (and at max); INVITE in -> push accepted (the stand-in's
   200 back, which adds the stand-in's own time on the shared cores) for reference.

The devices and the stand-in live in bench/call_farm.py (one process, uvloop); the
server runs as `python -m sipwake.cli serve --config FILE` on SQLite, users provisioned
straight into the store. Issue 4 targets: >= 300 parked flows/s, p99 of both latencies
< 5 ms at half that load. "UDP drops" are datagrams the kernel dropped on full socket
receive buffers during a run (all sockets / the one SIPp sends to).

--gc runs the server under bench/gc_pauses.py and prints its collector pauses per run.
--profile PREFIX has py-spy sample the server during the measured sipwake runs
(PREFIX-proxied.txt, PREFIX-parked-max.txt, PREFIX-parked-half.txt; raw collapsed stacks;
extra py-spy flags from $BENCH_PYSPY_ARGS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(HERE))
from register import DOMAIN, last_count, wait_udp  # noqa: E402 - bench/register.py

from tests.helpers.ports import free_port  # noqa: E402

UAC = HERE / "calls_uac.xml"  # built-in uac + field0 callee + Record-Route set
FARM = HERE / "call_farm.py"
API_TOKEN = "bench-admin-token"
TEAM, KID, BUNDLE = "TEAM123456", "KEY7654321", "com.example.dialer"
TARGET_FLOWS = 300.0
TARGET_P99_MS = 5.0


# ----------------------------------------------------------------------- setup
def provision(db: Path, prefixes: tuple[str, ...], users: int) -> None:
    """Users <prefix><i> with password p<i>, straight into the SQLite store."""
    from sipwake.sip.digest import ha1
    from sipwake.store import open_store
    from sipwake.store.models import User

    async def go() -> None:
        store = await open_store(f"sqlite:///{db}")
        await asyncio.gather(*(
            store.put_user(User(f"{p}{i}", DOMAIN, ha1(f"{p}{i}", DOMAIN, f"p{i}"),
                                ha1(f"{p}{i}", DOMAIN, f"p{i}", "SHA-256")))
            for p in prefixes for i in range(users)
        ))  # fmt: skip
        await store.close()

    asyncio.run(go())


def apns_key(path: Path) -> None:
    """An APNs auth key (.p8: PKCS#8 PEM, P-256)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip


def config(tmp: Path, sip_port: int, http_port: int, apns_port: int) -> Path:
    path, db, key = tmp / "bench.toml", tmp / "bench.db", tmp / "apns.p8"
    path.write_text(f"""\
[sip]
domain = "{DOMAIN}"
listen = ["udp:127.0.0.1:{sip_port}"]
secret = "bench"
trusted_peers = ["127.0.0.1"]
[http]
listen = "127.0.0.1:{http_port}"
api_token = "{API_TOKEN}"
[store]
url = "sqlite:///{db}"
[calls]
# SIPp is one trunk calling each user many times a minute: no per-source push limit
source_rate = 0
callee_rate = 0
[push.apns]
team_id = "{TEAM}"
key_id = "{KID}"
key_file = "{key}"
topic = "{BUNDLE}"
url = "http://127.0.0.1:{apns_port}"
allow_insecure = true
[log]
level = "WARNING"
""")
    return path


# ------------------------------------------------------------------- the farm
class Farm:
    """bench/call_farm.py: APNs stand-in + sleeping devices, driven by JSON lines."""

    def __init__(self, key: Path, sip_port: int, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(FARM), str(key), str(sip_port), DOMAIN],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        hello = self._read()
        self.apns_port, self.sip_port = int(hello["apns_port"]), int(hello["farm_port"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the device farm died")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("stop")
                self.proc.wait(10)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)


class Server:
    """`python -m sipwake.cli serve --config FILE` (under bench/gc_pauses.py with --gc)."""

    def __init__(self, tmp: Path, cfg: Path, env: dict[str, str], gc: bool) -> None:
        self.tmp, self.cfg, self.env, self.gc = tmp, cfg, env, gc
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log: list[str] = []  # what it logged (WARNING and above), every instance

    def start(self) -> None:
        self.runs += 1
        serve = ["sipwake.cli", "serve", "--config", str(self.cfg)]
        gc_log = self.tmp / f"gc-{self.runs}.jsonl"
        serve = [str(HERE / "gc_pauses.py"), str(gc_log), *serve] if self.gc else ["-m", *serve]
        with (self.tmp / f"server-{self.runs}.log").open("w") as log:
            self.proc = subprocess.Popen([sys.executable, *serve], env=self.env, cwd=self.tmp,
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
            self.log += (self.tmp / f"server-{self.runs}.log").read_text().splitlines()

    def restart(self) -> None:
        self.stop()
        self.start()

    def gc_pauses(self) -> list[dict[str, Any]]:
        return [json.loads(line) for n in range(1, self.runs + 1)
                for line in (self.tmp / f"gc-{n}.jsonl").read_text().splitlines()]  # fmt: skip


# ------------------------------------------------------------------------ SIPp
SIPP_COMMON = ["-i", "127.0.0.1", "-t", "u1", "-nostdin", "-max_recv_loops", "10000",
               "-max_sched_loops", "10000", "-buff_size", str(4 << 20)]  # fmt: skip


@dataclass
class Run:
    seconds: float
    ok: int
    failed: int
    drops: int  # UDP datagrams dropped on full receive buffers meanwhile (any socket)
    target_drops: int  # of which on the socket SIPp sent to (sipwake's, or the baseline UAS's)
    window: tuple[float, float]  # unix time at start and end

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def uas(port: int, cwd: Path) -> subprocess.Popen[bytes]:
    cmd = [shutil.which("sipp") or "sipp", "-sn", "uas", "-p", str(port), *SIPP_COMMON]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # SIPp's UAS answers nothing but INVITE: wait for its bind
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return proc
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"SIPp UAS did not bind udp {port}")


def uac(port: int, calls: int, cwd: Path, *, concurrency: int, rate: float | None = None,
        inf: Path | None = None) -> Run:  # fmt: skip
    """`calls` calls to 127.0.0.1:port; closed loop at `concurrency` unless `rate` is given."""
    scenario = ["-sf", str(UAC), "-inf", str(inf)] if inf else ["-sn", "uac", "-s", "bench"]
    cmd = [
        shutil.which("sipp") or "sipp", f"127.0.0.1:{port}", "-p", "0", *scenario,
        "-m", str(calls), "-l", str(concurrency if rate is None else 20 * concurrency),
        "-r", str(100000 if rate is None else round(rate)), "-rp", "1000", "-d", "0",
        "-recv_timeout", "10000", "-timeout", "60s", "-timeout_error", "-trace_err",
        *SIPP_COMMON,
    ]  # fmt: skip
    drops, target_drops = udp_drops(port)
    wall, start = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False, timeout=90)
    elapsed = time.perf_counter() - start
    drops_after, target_drops_after = udp_drops(port)
    return Run(elapsed, last_count(proc.stdout, "Successful call"),
               last_count(proc.stdout, "Failed call"), drops_after - drops,
               target_drops_after - target_drops, (wall, time.time()))  # fmt: skip


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def profiling(prefix: Path | None, name: str, pid: int) -> Iterator[None]:
    """py-spy samples the server meanwhile (raw, for flamegraph.pl or grep):
    `<prefix>-<name>.txt`."""
    if prefix is None:
        yield
        return
    path = prefix.parent / f"{prefix.name}-{name}.txt"
    cmd = ["py-spy", "record", "-o", str(path), "-f", "raw", "--nonblocking", "-r", "200",
           "--pid", str(pid), *os.environ.get("BENCH_PYSPY_ARGS", "").split()]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on ^C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ----------------------------------------------------------------------- stats
def stats(http_port: int, reset: bool = False) -> dict[str, Any]:
    url = f"http://127.0.0.1:{http_port}/v1/admin/stats" + ("?reset=1" if reset else "")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def udp_drops(port: int) -> tuple[int, int]:
    """Datagrams lost to a full receive buffer: (all sockets, the socket on `port`)."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]  # fmt: skip
    total = int(dict(zip(lines[0], lines[1], strict=True)).get("RcvbufErrors", 0))
    mine = sum(
        int(row[-1])
        for row in (ln.split() for ln in Path("/proc/net/udp").read_text().splitlines()[1:])
        if int(row[1].rpartition(":")[2], 16) == port
    )
    return total, mine


def count_for(rate: float, seconds: float, least: int = 300) -> int:
    return max(least, int(rate * seconds))


# ------------------------------------------------------------------- the bench
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=2000, help="callees (sleeping iPhones)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="calls in flight through sipwake (closed loop)")  # fmt: skip
    parser.add_argument("--baseline-concurrency", type=int, default=200,
                        help="calls in flight SIPp to SIPp")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured run")
    parser.add_argument("--profile", type=Path, help="py-spy the server: PREFIX-<run>.txt")
    parser.add_argument("--gc", action="store_true", help="record the server's GC pauses")
    args = parser.parse_args()
    conc, secs = args.concurrency, args.seconds

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sipwake-calls-"))
    provision(tmp / "bench.db", ("u", "c"), args.users)
    apns_key(tmp / "apns.p8")
    parked_inf, plain_inf = tmp / "parked.csv", tmp / "plain.csv"
    parked_inf.write_text("SEQUENTIAL\n" + "".join(f"u{i}\n" for i in range(args.users)))
    plain_inf.write_text("SEQUENTIAL\n" + "".join(f"c{i}\n" for i in range(args.users)))

    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    base_uas, plain_uas = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    ))  # fmt: skip
    farm = Farm(tmp / "apns.p8", sip_port, env)
    cfg = config(tmp, sip_port, http_port, farm.apns_port)
    server = Server(tmp, cfg, env, args.gc)
    procs: list[subprocess.Popen[Any]] = []
    out: dict[str, Any] = {}
    try:
        server.start()
        wait_udp(sip_port)

        # 1. baseline: SIPp -> SIPp
        procs.append(uas(base_uas, tmp))
        bconc = args.baseline_concurrency
        warm = uac(base_uas, 2000, tmp, concurrency=bconc)
        out["baseline"] = uac(base_uas, count_for(warm.rate, secs), tmp, concurrency=bconc)
        stop(procs.pop())

        # 2. proxied: SIPp -> sipwake -> SIPp UAS, callees bound by REGISTER from its port
        out["bound"] = farm.ask("bind", port=plain_uas, prefix="c", n=args.users)
        procs.append(uas(plain_uas, tmp))
        warm = uac(sip_port, 1000, tmp, concurrency=conc, inf=plain_inf)
        with profiling(args.profile, "proxied", server.pid()):
            out["proxied"] = uac(sip_port, count_for(warm.rate, secs), tmp, concurrency=conc,
                                 inf=plain_inf)  # fmt: skip
        stop(procs.pop())

        # 3. parked: every callee asleep, woken by its push; at max, then at half that rate.
        # A fresh server, so the parked runs start from the same state every time.
        server.restart()
        wait_udp(sip_port)
        out["provisioned"] = farm.ask("provision", n=args.users)
        warm = uac(sip_port, 400, tmp, concurrency=conc, inf=parked_inf)
        farm.ask("idle", timeout=15)
        stats(http_port, reset=True)
        out["farm_before"] = farm.ask("stats")
        with profiling(args.profile, "parked-max", server.pid()):
            out["parked_max"] = uac(sip_port, count_for(warm.rate, secs), tmp, concurrency=conc,
                                    inf=parked_inf)  # fmt: skip
        out["farm_max"] = farm.ask("idle", timeout=15)
        out["stats_max"] = stats(http_port)
        stats(http_port, reset=True)

        half = out["half"] = out["parked_max"].rate / 2
        with profiling(args.profile, "parked-half", server.pid()):
            out["parked_half"] = uac(sip_port, count_for(half, secs), tmp, concurrency=conc,
                                     rate=half, inf=parked_inf)  # fmt: skip
        out["farm_half"] = farm.ask("idle", timeout=15)
        out["stats_half"] = stats(http_port)
    finally:
        for proc in procs:
            stop(proc)
        server.stop()
        farm.stop()
        if "stats_half" not in out:  # the run failed: what the server said
            print("server log:", *server.log[-20:], sep="\n  ")

    pauses = server.gc_pauses() if args.gc else None
    server_log = server.log
    report(args, out, pauses)
    print(f"server log: {len(server_log)} lines at WARNING and above", *server_log[:8],
          sep="\n  ")  # fmt: skip
    print(f"whole bench: {time.perf_counter() - started:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, out: dict[str, Any], pauses: list[dict[str, Any]] | None
           ) -> None:  # fmt: skip
    base: Run = out["baseline"]
    half = out["half"]
    bound, provisioned = out["bound"], out["provisioned"]
    print(f"sipwake calls bench: {os.cpu_count()} cores, SIPp {_sipp_version()}, {args.users} "
          f"callees; closed loop: {args.concurrency} calls in flight through sipwake, "
          f"{args.baseline_concurrency} SIPp to SIPp")  # fmt: skip
    print(f"setup: {args.users} SIPp-UAS bindings in {bound['seconds']:.1f}s {bound['statuses']}; "
          f"{args.users} iPhones registered+slept in {provisioned['seconds']:.1f}s "
          f"{provisioned['statuses']}")  # fmt: skip
    print()
    print(f"{'':44}{'calls/s':>9}{'ok':>8}{'failed':>8}{'vs SIPp':>9}  UDP drops all/target")
    rows = [
        ("SIPp UAC -> SIPp UAS (baseline)", base),
        ("SIPp UAC -> sipwake -> SIPp UAS (proxied)", out["proxied"]),
        ("parked flows, max (INVITE..push..BYE)", out["parked_max"]),
        (f"parked flows, rate-limited to {half:.0f}/s", out["parked_half"]),
    ]
    for label, run in rows:
        print(f"{label:44}{run.rate:9.0f}{run.ok:8d}{run.failed:8d}{run.rate / base.rate:9.3f}"
              f"{run.drops:8d} / {run.target_drops}")  # fmt: skip
    pm = out["parked_max"].rate
    print(f"target: >= {TARGET_FLOWS:.0f} parked flows/s: "
          f"{'MET' if pm >= TARGET_FLOWS else 'MISSED'} ({pm:.0f})")  # fmt: skip
    print()
    print(f"sipwake latency (its /v1/admin/stats){'':7}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}")
    met = True
    for load, key in ((f"half ({half:.0f}/s)", "stats_half"), ("max", "stats_max")):
        for metric, label in (("call_push", "INVITE in -> push out"),
                              ("register_to_invite", "REGISTER in -> INVITE out"),
                              ("call_push_accepted", "(INVITE in -> push accepted)")):  # fmt: skip
            s = out[key][metric]
            print(f"  {label:28} {load:14}{s['count']:8d}{s['p50_ms']:9.2f}{s['p99_ms']:9.2f}")
            if key == "stats_half" and metric != "call_push_accepted":
                met = met and s["count"] > 0 and s["p99_ms"] < TARGET_P99_MS
    print(f"target: p99 < {TARGET_P99_MS:.0f} ms at half load: {'MET' if met else 'MISSED'}")
    if pauses is not None:
        print()
        print("server GC pauses >= 5 ms (gc.callbacks)     count   max ms  total ms  by generation")
        for label, name in (("proxied", "proxied"), ("parked, max", "parked_max"),
                            ("parked, half", "parked_half")):  # fmt: skip
            t0, t1 = out[name].window
            mine = [p for p in pauses if t0 <= p["t"] <= t1 and p["ms"] >= 5]
            gens = Counter(f"gen{p['gen']}" for p in mine)
            worst = max((p["ms"] for p in mine), default=0.0)
            total = sum(p["ms"] for p in mine)
            print(f"  during {label:34}{len(mine):6d}{worst:9.1f}{total:10.0f}  {dict(gens)}")
    print()
    before, after_max, after = out["farm_before"], out["farm_max"], out["farm_half"]
    keys = ("pushes", "wake_registers", "invites", "byes", "flows", "register_challenged",
            "register_retransmits", "register_settled", "register_superseded",
            "push_while_awake")  # fmt: skip
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    print(f"devices, both parked runs: {after_max.get('flows', 0) - before.get('flows', 0)} + "
          f"{after.get('flows', 0) - after_max.get('flows', 0)} flows completed; "
          f"{ {k: v for k, v in delta.items() if v} }; awake at end {after['awake']}")  # fmt: skip
    print(f"APNs stand-in: {after['apns_answered']} pushes answered on "
          f"{after['apns_connections']} connection(s), violations "
          f"{after['apns_violations'] or 'none'}")  # fmt: skip
    prefixes = ("unexpected", "wake_register_", "sleep_register_", "push_unk")
    odd = {k: v for k, v in after.items() if k.startswith(prefixes)}
    if odd:
        print(f"odd device events: {odd}")
    print(f"parked server's ended-call table (kept ~2 park timeouts for late devices): "
          f"{out['stats_max']['calls']['ended']} after the max run, "
          f"{out['stats_half']['calls']['ended']} after the half-rate run")  # fmt: skip
    print(f"server at the end: calls {out['stats_half']['calls']}, "
          f"transactions {out['stats_half']['transactions']}")  # fmt: skip


def _sipp_version() -> str:
    proc = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False)
    m = re.search(r"v(\d+\.\d+\.\d+)", proc.stdout + proc.stderr)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
