"""sipwake beside Kamailio 5.6 on the same SIPp scenarios: CPU per operation, and its ratio.

    python bench/vs_kamailio.py [--rounds 3] [--seconds 15]      # the measurement (~30 min)
    python bench/vs_kamailio.py --quick                          # development (< 2 min)

Installs nothing. Needs `kamailio` and `kamcmd` (Debian `kamailio`,
`kamailio-sqlite-modules`), SIPp (`sip-tester`) and `taskset`; sipwake is the `sipwake`
console script next to this interpreter (`pip install -e .`), run as `sipwake serve`
on SQLite, as a user would run it.

The configuration and scenarios are bench/kamailio/ (a copy of the anchor in
../shared/anchors/kamailio/; its README says how it was measured). Each server is
pinned to one core (`--server-core`, default 1), every SIPp and the APNs stand-in to
the other (`--client-core`, default 0). Open loop (`-r RATE`). A rate *passes* with at
most 0.1 % failed calls (the anchor: none; see MAX_FAILED, --max-failed) and < 0.1 %
retransmitted messages. CPU per operation = the server's utime+stime (every process of
it, from /proc) over the run / operations completed; the ratio compares the servers at
one rate, sipwake's highest passing one (Kamailio's cost per operation falls steeply
with the rate as its fixed costs spread).

Tests (one operation each):
  register  REGISTER → 401 → REGISTER with digest and an RFC 8599 Contact → 200 (with
            Feature-Caps), reg_auth.xml, users cycling through a pool whose devices exist;
  proxied   INVITE/180/200/ACK, 500 ms, BYE through the server (Record-Route) to a SIPp
            UAS that registered its users (uac.xml, uas.xml);
  parked    caller INVITE parked (sipwake: a VoIP push over TLS to the APNs stand-in;
            Kamailio: tsilo and a log line) → the device REGISTERs with digest 200 ms later
            → the INVITE is relayed to it → answered (uac.xml + device.xml, -cid_str);
            its users are re-provisioned asleep (prov.xml) before every run.
Then, per server on a fresh start: memory per registered device (sipwake: RSS delta;
Kamailio: shm real_used delta, as the anchor) after `--devices` registrations; and
sipwake's INVITE → push out p50/p99 (its /v1/admin/stats) at half the parked maximum.

Before each measured run (full mode) the server gets back to its idle CPU use (at most
QUIET_MAX s): what an overloaded run left behind (retransmissions, timers) is that run's
cost, not the next one's. During each measured run the other servers are paused
(SIGSTOP), so an idle one's housekeeping never takes the shared server core.

Full mode: per round, server and test, a rate ladder (×`--step`) climbs from just below
the best rate so far (a short probe finds the first guess) until a run fails; the round's
figure is its highest passing run (rate and CPU per operation there). Rounds alternate
the servers (A,B,A,B,...). Medians over rounds are printed, with the ratio
sipwake/Kamailio of CPU per operation (lower is better; 1.0 is parity).
--quick: one round, each test at one fixed rate (`--quick-rates`), short runs, fewer
devices; for A/B work on the hot path, not for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from register import free_port, last_count, rss_mib  # noqa: E402 - bench/register.py

ANCHOR = HERE / "kamailio"
DOMAIN = "bench.example"
API_TOKEN = "bench-admin-token"
TEAM, KID, BUNDLE = "TEAM123456", "KEY7654321", "com.example.dialer"
TESTS = ("register", "proxied", "parked")
UNIT = {"register": "registrations", "proxied": "calls", "parked": "flows"}
# where the first probe of a ladder starts, operations/s
START = {"register": 400.0, "proxied": 150.0, "parked": 80.0}
QUICK_RATES = {"register": 600.0, "proxied": 200.0, "parked": 100.0}
MAX_RETRANS = 0.001
# failed calls a passing run may have, as a fraction (--max-failed): the anchor allowed
# none, but Kamailio's two UDP workers now and then relay a 180 behind the 200 of the
# same call (seen ~1 flow in 300 at 100 parked flows/s), and uac.xml then aborts it
MAX_FAILED = [0.001]
HOLD_MS = 500
# Before each measured run a server gets back to idle: what an overloaded run left
# behind (retransmissions, timers, queued work) is that run's cost, not the next one's.
# Idle: CPU over a QUIET_WINDOW within QUIET_MARGIN cores of its own idle use.
QUIET_WINDOW = 1.0
QUIET_MARGIN = 0.03
QUIET_MAX = 40.0  # seconds; beyond the longest transaction timer (32 s)


# ------------------------------------------------------------------ processes
def wait_sip(port: int, timeout: float = 30.0) -> None:
    """Until the server answers an OPTIONS (any answer) on udp `port`."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        me = s.getsockname()[1]
        while time.monotonic() < deadline:
            s.sendto((f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{time.monotonic_ns()};rport"
                      f"\r\nFrom: <sip:w@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\n"
                      "Call-ID: wait\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                      "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
            try:
                s.recv(4096)
                return
            except OSError:
                continue
    raise RuntimeError(f"nothing answers on udp {port}")


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def tree_pids(root: int) -> list[int]:
    """`root` and every process below it (Kamailio forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(root: int) -> float:
    """utime+stime of `root` and its live descendants, seconds."""
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / clock_ticks()


def stop(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def pinned(core: int, *cmd: str) -> list[str]:
    return ["taskset", "-c", str(core), *cmd]


# ---------------------------------------------------------------------- users
def token(prefix: str, i: int) -> str:
    return hashlib.sha256(f"{prefix}{i}".encode()).hexdigest()  # 64 hex digits, as APNs'


def user_lines(prefix: str, first: int, count: int) -> list[str]:
    """SIPp injection lines: user;password;domain;pn-prid;[authentication];instance."""
    return [
        f"{prefix}{i};p{i};{DOMAIN};{token(prefix, i)};"
        f"[authentication username={prefix}{i} password=p{i}];{i:012x}"
        for i in range(first, first + count)
    ]


def inf_file(path: Path, prefix: str, first: int, count: int) -> Path:
    path.write_text("SEQUENTIAL\n" + "\n".join(user_lines(prefix, first, count)) + "\n")
    return path


def ha1(user: str, password: str, algorithm: str = "MD5") -> str:
    text = f"{user}:{DOMAIN}:{password}".encode()
    if algorithm == "MD5":
        return hashlib.md5(text, usedforsecurity=False).hexdigest()
    return hashlib.sha256(text).hexdigest()


# --------------------------------------------------------------------- SIPp
@dataclass
class SippResult:
    ok: int
    failed: int
    sent: int  # messages sent by the scenario's <send>s
    retrans: int
    seconds: float

    @property
    def retrans_ratio(self) -> float:
        return self.retrans / self.sent if self.sent else 0.0


_ROW = re.compile(r"^\s+(\S.*?)\s+(---------->|<----------)\s+(?:[BE]-RTD\d+\s+)?(\d+)\s+(\d+)",
                  re.M)  # fmt: skip


def sipp_result(out: str, seconds: float) -> SippResult:
    sent = retrans = 0
    # the last Scenario Screen printed is the final one
    screen = out.rsplit("Scenario Screen", 1)[-1]
    for m in _ROW.finditer(screen):
        if m.group(2) == "---------->":
            sent += int(m.group(3))
            retrans += int(m.group(4))
    return SippResult(last_count(out, "Successful call"), last_count(out, "Failed call"),
                      sent, retrans, seconds)  # fmt: skip


class Sipp:
    """SIPp runs, all pinned to the client core."""

    def __init__(self, core: int, cwd: Path) -> None:
        self.core = core
        self.cwd = cwd
        self.exe = shutil.which("sipp") or "sipp"
        self.extra: list[str] = []  # --trace: -trace_err (SIPp's error logs in the scratch dir)

    def cmd(self, port: int, scenario: Path, *args: str, rate: float, calls: int,
            local_port: int = 0, seconds: float = 60) -> list[str]:  # fmt: skip
        return pinned(self.core, self.exe, f"127.0.0.1:{port}", "-sf", str(scenario),
                      "-i", "127.0.0.1", "-p", str(local_port), "-t", "u1",
                      "-m", str(calls), "-r", f"{rate:.0f}", "-rp", "1000",
                      "-l", str(max(100, int(rate * 10))),
                      "-nostdin", "-timeout", f"{seconds + 40:.0f}s", "-timeout_error",
                      "-max_recv_loops", "10000", "-max_sched_loops", "10000",
                      "-buff_size", str(4 << 20), *self.extra, *args)  # fmt: skip

    def start(self, cmd: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(cmd, cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip

    def finish(self, proc: subprocess.Popen[str], started: float) -> SippResult:
        out, _ = proc.communicate(timeout=600)
        return sipp_result(out, time.perf_counter() - started)

    def run(self, cmd: list[str]) -> SippResult:
        started = time.perf_counter()
        return self.finish(self.start(cmd), started)


# -------------------------------------------------------------------- servers
class Server:
    name = ""
    pid = 0
    port = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def forget_bindings(self) -> None:
        """While stopped: the stored bindings go (a restart would load them)."""
        con = sqlite3.connect(self.db_path())
        con.execute(f"DELETE FROM {self.bindings_table}")
        con.commit()
        con.close()

    bindings_table = ""

    def db_path(self) -> Path:
        raise NotImplementedError

    def memory(self) -> float:
        """Bytes the server's state takes (the memory test's delta)."""
        raise NotImplementedError


class Kamailio(Server):
    name = "Kamailio"
    bindings_table = "location"  # preloaded at start into pkg memory (-M 32: ~20k fit)

    def __init__(self, tmp: Path, core: int, anchor: Path, users: list[tuple[str, int]]) -> None:
        self.tmp, self.core, self.anchor = tmp / "kamailio", core, anchor
        self.tmp.mkdir()
        self.db = self.tmp / "kam.db"
        self.ctl = self.tmp / "kam_ctl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.port = free_port()
        self.provision(users)

    def provision(self, users: list[tuple[str, int]]) -> None:
        """The anchor's schema (from the Debian package) and HA1s in `subscriber`."""
        self.db.unlink(missing_ok=True)
        con = sqlite3.connect(self.db)
        # WAL: the 2 s usrloc write-back (WITH_ULDB) must not lock out the auth reads
        con.execute("PRAGMA journal_mode=WAL")
        for name in ("standard", "auth_db", "usrloc"):
            con.executescript(Path(f"/usr/share/kamailio/db_sqlite/{name}-create.sql").read_text())
        con.executemany(
            "INSERT INTO subscriber (username, domain, ha1) VALUES (?, ?, ?)",
            ((f"{p}{i}", DOMAIN, ha1(f"{p}{i}", f"p{i}")) for p, n in users for i in range(n)),
        )
        con.commit()
        con.close()

    def db_path(self) -> Path:
        return self.db

    def start(self) -> None:
        self.runs += 1
        self.ctl.unlink(missing_ok=True)
        with (self.tmp / f"kamailio-{self.runs}.log").open("wb") as log:
            self.proc = subprocess.Popen(pinned(
                self.core, "kamailio", "-f", str(self.anchor / "kamailio.cfg"), "-DD", "-E",
                "-m", "1024", "-M", "32", "-A", f"LISTEN=udp:127.0.0.1:{self.port}",
                "-A", f'DBURL="sqlite://{self.db}"', "-A", f'CTLSOCK="unix:{self.ctl}"',
                "-A", "WITH_ULDB", "-A", "WITH_PUSHLOG",
            ), stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)  # fmt: skip
        self.pid = self.proc.pid
        wait_sip(self.port)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def memory(self) -> float:
        out = subprocess.run(["kamcmd", "-s", f"unix:{self.ctl}", "core.shmmem"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        m = re.search(r"real_used:\s*(\d+)", out)
        if m is None:
            raise RuntimeError(f"kamcmd core.shmmem: {out!r}")
        return float(m.group(1))


def sipwake_command() -> str:
    here = Path(sys.executable).parent / "sipwake"
    found = str(here) if here.exists() else shutil.which("sipwake")
    if not found:
        raise SystemExit("no `sipwake` console script: pip install -e .")
    return found


class Sipwake(Server):
    name = "sipwake"
    bindings_table = "bindings"

    def __init__(self, tmp: Path, core: int, apns: ApnsStandIn, users: list[tuple[str, int]],
                 checkout: str = "") -> None:  # fmt: skip
        # checkout: another source tree (A/B work), run as `python -m sipwake.cli serve`
        self.checkout = checkout
        if checkout:
            self.name = "baseline"
        self.tmp, self.core = tmp / self.name, core
        self.tmp.mkdir()
        self.db = self.tmp / "sipwake.db"
        self.port, self.http_port = free_port(), free_port(socket.SOCK_STREAM)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.cfg = self.tmp / "sipwake.toml"
        self.cfg.write_text(f"""\
[sip]
domain = "{DOMAIN}"
listen = ["udp:127.0.0.1:{self.port}"]
secret = "bench"
# SIPp is one address sending thousands a second, and the callers' trunk
source_rate = 0
trusted_peers = ["127.0.0.1"]
[http]
listen = "127.0.0.1:{self.http_port}"
api_token = "{API_TOKEN}"
[store]
url = "sqlite:///{self.db}"
[calls]
source_rate = 0
callee_rate = 0
max_parked_per_user = 100
max_parked_total = 1000000
[push.apns]
team_id = "{TEAM}"
key_id = "{KID}"
key_file = "{apns.key_file}"
topic = "{BUNDLE}"
url = "https://127.0.0.1:{apns.port}"
ca_file = "{apns.ca_file}"
[log]
level = "WARNING"
""")
        self.provision(users)

    def provision(self, users: list[tuple[str, int]]) -> None:
        """Users straight into the store, as `sipwake user add` writes them."""
        from sipwake.store import open_store
        from sipwake.store.models import User

        async def go() -> None:
            store = await open_store(f"sqlite:///{self.db}")
            try:
                for p, n in users:
                    for first in range(0, n, 5000):
                        await asyncio.gather(*(
                            store.put_user(User(f"{p}{i}", DOMAIN, ha1(f"{p}{i}", f"p{i}"),
                                                ha1(f"{p}{i}", f"p{i}", "SHA-256")))
                            for i in range(first, min(n, first + 5000))
                        ))  # fmt: skip
            finally:
                await store.close()

        asyncio.run(go())

    def start(self) -> None:
        self.runs += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPWAKE_")}
        command = [sipwake_command()]
        if self.checkout:
            env["PYTHONPATH"] = self.checkout
            command = [sys.executable, "-m", "sipwake.cli"]
        with (self.tmp / f"sipwake-{self.runs}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                pinned(self.core, *command, "serve", "--config", str(self.cfg)),
                stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, env=env,
            )  # fmt: skip
        self.pid = self.proc.pid
        wait_sip(self.port)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def memory(self) -> float:
        return rss_mib(self.pid) * 1024 * 1024

    def db_path(self) -> Path:
        return self.db

    def stats(self, reset: bool = False) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/v1/admin/stats" + ("?reset=1" if reset else "")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def log_tail(self) -> list[str]:
        path = self.tmp / f"sipwake-{self.runs}.log"
        return path.read_text(errors="replace").splitlines()[-10:] if path.exists() else []


# ---------------------------------------------------------------- APNs stand-in
class ApnsStandIn:
    """tests/push/apns_standin.py over TLS in a process of its own, on the client core."""

    def __init__(self, tmp: Path, core: int) -> None:
        from tests.helpers.certs import make_certs
        from tests.helpers.push import write_apns_key

        d = tmp / "apns"
        d.mkdir()
        certs = make_certs(d)
        self.key_file, _ = write_apns_key(d)
        self.ca_file = certs.ca_file
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            pinned(core, sys.executable, __file__, "--apns-standin", str(d), self.key_file,
                   certs.cert_file, certs.key_file),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.port = int(self.ask("port")["port"])

    def ask(self, what: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the APNs stand-in died")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        stop(self.proc)


def standin_main(directory: str, apns_key: str, cert: str, key: str) -> None:
    import ssl

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.helpers.apns_standin import APNsStandIn

    private = serialization.load_pem_private_key(Path(apns_key).read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2"])
        server = APNsStandIn(team_id=TEAM, key_id=KID, public_key=private.public_key(),
                             topics={BUNDLE}, ssl_context=ctx, record=False)  # fmt: skip
        await server.start()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            answer = {"port": server.port, "answered": server.answered,
                      "connections": server.connections,
                      "violations": server.violations[:5]}  # fmt: skip
            print(json.dumps(answer), flush=True)
            del line
        await server.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# ---------------------------------------------------------------------- runs
@dataclass
class Run:
    server: str
    test: str
    round: int
    rate: float
    ok: int
    failed: int
    retrans_ratio: float
    cpu: float  # server CPU seconds over the run

    @property
    def passed(self) -> bool:
        return (self.ok > 0 and self.failed <= MAX_FAILED[0] * (self.ok + self.failed)
                and self.retrans_ratio < MAX_RETRANS)  # fmt: skip

    @property
    def cpu_per_op_us(self) -> float:
        return self.cpu / self.ok * 1e6 if self.ok else float("nan")


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    sipp: Sipp
    servers: list[Server]
    runs: list[Run] = field(default_factory=list)
    log: Callable[[str], None] = print
    parked_runs: int = 0
    idle: dict[str, float] = field(default_factory=dict)  # server → its CPU use when idle

    # ------------------------------------------------------------ scenarios
    def scenario(self, name: str) -> Path:
        return Path(self.args.anchor) / name

    def calls_for(self, rate: float) -> int:
        return max(20, int(rate * self.args.seconds))

    @contextmanager
    def measured(self, server: Server) -> Iterator[list[float]]:
        with self.alone(server):
            if not self.args.quick:
                waited = self.quiet(server)
                if waited > 2 * QUIET_WINDOW:
                    self.log(f"  {server.name}: idle again after {waited:.0f} s")
            box = [server.cpu()]
            yield box
            box[0] = server.cpu() - box[0]

    @contextmanager
    def alone(self, server: Server) -> Iterator[None]:
        """The other servers paused (SIGSTOP) meanwhile: they share the server core, and
        an idle one's housekeeping (Kamailio's timers, sipwake's full collection at a
        quiet moment, ~1 s after a big run) would take it from the one measured."""
        paused = [pid for other in self.servers if other is not server and other.pid
                  for pid in tree_pids(other.pid)]  # fmt: skip
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def quiet(self, server: Server) -> float:
        """Wait until `server` uses no more CPU than when idle; the seconds waited. Its
        idle use is the least it used over a window so far (Kamailio's timers and
        sipwake's sweeps cost a little even then)."""
        started = time.monotonic()
        last = server.cpu()
        while time.monotonic() - started < QUIET_MAX:
            time.sleep(QUIET_WINDOW)
            now = server.cpu()
            rate = (now - last) / QUIET_WINDOW
            last = now
            idle = min(self.idle.get(server.name, rate), rate)
            self.idle[server.name] = idle
            if rate <= idle + QUIET_MARGIN:
                break
        return time.monotonic() - started

    def register(self, server: Server, rate: float, rnd: int) -> Run:
        calls = self.calls_for(rate)
        inf = self.tmp / "register.csv"  # the pool, cycled: devices known, as phones refresh
        with self.measured(server) as cpu:
            res = self.sipp.run(self.sipp.cmd(server.port, self.scenario("reg_auth.xml"),
                                              "-inf", str(inf), rate=rate, calls=calls,
                                              seconds=self.args.seconds))  # fmt: skip
        return self.record(server, "register", rnd, rate, res, cpu[0])

    def proxied(self, server: Server, rate: float, rnd: int) -> Run:
        uas_port = free_port()
        callees = self.tmp / "callees.csv"
        # the UAS's users bound to its own port, then the UAS takes that port
        bound = self.sipp.run(self.sipp.cmd(server.port, self.scenario("reg_auth.xml"),
                                            "-inf", str(callees), rate=2000,
                                            calls=self.args.callees, local_port=uas_port))
        if bound.failed:
            self.log(f"  {server.name}: {bound.failed} callee registrations failed")
        uas = self.sipp.start(pinned(self.sipp.core, self.sipp.exe, "-sf",
                                     str(self.scenario("uas.xml")), "-i", "127.0.0.1",
                                     "-p", str(uas_port), "-t", "u1", "-nostdin",
                                     "-max_recv_loops", "10000", "-buff_size", str(4 << 20)))
        time.sleep(0.3)
        try:
            calls = self.calls_for(rate)
            with self.measured(server) as cpu:
                res = self.sipp.run(self.sipp.cmd(server.port, self.scenario("uac.xml"),
                                                  "-inf", str(callees), "-d", str(HOLD_MS),
                                                  rate=rate, calls=calls,
                                                  seconds=self.args.seconds))  # fmt: skip
        finally:
            stop(uas, signal.SIGINT)
        return self.record(server, "proxied", rnd, rate, res, cpu[0])

    def asleep(self, server: Server, count: int) -> None:
        """Users p0..p<count-1> registered (device stored) and unregistered: asleep."""
        inf = inf_file(self.tmp / "prov.csv", "p", 0, count)
        res = self.sipp.run(self.sipp.cmd(server.port, self.scenario("prov.xml"), "-inf",
                                          str(inf), rate=1000, calls=count))  # fmt: skip
        if res.failed:
            self.log(f"  {server.name}: {res.failed} of {count} provisionings failed")
        time.sleep(1.0)  # their bindings' writes settle outside the measured run

    def parked(self, server: Server, rate: float, rnd: int) -> Run:
        calls = self.calls_for(rate)
        self.asleep(server, calls)
        inf = inf_file(self.tmp / "parked.csv", "p", 0, calls)
        # caller and device share call #k's Call-ID; a new one every run (no leftovers)
        self.parked_runs += 1
        common = ("-inf", str(inf), "-cid_str", f"park{self.parked_runs}-%u")
        with self.measured(server) as cpu:
            started = time.perf_counter()
            device = self.sipp.start(self.sipp.cmd(server.port, self.scenario("device.xml"),
                                                   *common, rate=rate, calls=calls,
                                                   seconds=self.args.seconds))  # fmt: skip
            caller = self.sipp.start(self.sipp.cmd(server.port, self.scenario("uac.xml"),
                                                   *common, "-d", str(HOLD_MS), rate=rate,
                                                   calls=calls, seconds=self.args.seconds))
            res = self.sipp.finish(caller, started)
            dev = self.sipp.finish(device, started)
        both = SippResult(min(res.ok, dev.ok), res.failed + dev.failed, res.sent + dev.sent,
                          res.retrans + dev.retrans, res.seconds)  # fmt: skip
        return self.record(server, "parked", rnd, rate, both, cpu[0])

    def record(self, server: Server, test: str, rnd: int, rate: float, res: SippResult,
               cpu: float) -> Run:  # fmt: skip
        run = Run(server.name, test, rnd, rate, res.ok, res.failed, res.retrans_ratio, cpu)
        self.runs.append(run)
        self.log(f"  round {rnd} {server.name:8} {test:8} {rate:7.0f}/s  ok {run.ok:6d} "
                 f"failed {run.failed:4d} retrans {100 * run.retrans_ratio:5.2f}%  "
                 f"CPU {run.cpu_per_op_us:7.0f} us/op  {'pass' if run.passed else 'FAIL'}")
        return run

    def run_test(self, test: str, server: Server, rate: float, rnd: int) -> Run:
        return getattr(self, test)(server, rate, rnd)  # type: ignore[no-any-return]

    # --------------------------------------------------------------- ladders
    def probe(self, test: str, server: Server) -> float:
        """A first guess of the max passing rate: short runs, ×1.5 until one fails."""
        seconds, self.args.seconds = self.args.seconds, self.args.probe_seconds
        try:
            rate, best = START[test], 0.0
            while rate < 100_000:
                if not self.run_test(test, server, rate, 0).passed:
                    break
                best, rate = rate, rate * 1.5
            return best or START[test] / 2
        finally:
            self.args.seconds = seconds

    def climb(self, test: str, server: Server, guess: float, rnd: int) -> Run | None:
        """From just below `guess`, ×step until a run fails: the highest passing run."""
        step = self.args.step
        rate = guess / step
        best: Run | None = None
        for _ in range(self.args.max_steps):
            run = self.run_test(test, server, rate, rnd)
            if run.passed:
                best = run
                rate *= step
            elif best is None:
                rate /= step * step  # below the guess already: go down
            else:
                break
        return best


# -------------------------------------------------------------------- memory
def memory_test(bench: Bench, counts: list[int]) -> dict[str, dict[int, float]]:
    """Bytes per registered device at each count, every server on a fresh start; the
    servers settle together (sipwake's finished transactions linger 32 s)."""
    sipp = bench.sipp
    rates = {"Kamailio": 2000, "sipwake": 1000, "baseline": 1000}
    base: dict[str, float] = {}
    for server in bench.servers:
        server.stop()
        server.forget_bindings()  # a fresh start: nothing registered yet
        server.start()
        warm = inf_file(bench.tmp / "mwarm.csv", "m", 0, 200)
        sipp.run(sipp.cmd(server.port, bench.scenario("reg_auth.xml"), "-inf", str(warm),
                          rate=200, calls=200))  # fmt: skip
    if bench.args.quick:
        time.sleep(1)  # its 400 transactions still linger: the delta is ~2 % low
    else:
        settle(bench.servers)
    for server in bench.servers:
        base[server.name] = server.memory()
    done = 200
    out: dict[str, dict[int, float]] = {server.name: {} for server in bench.servers}
    for count in counts:
        inf = inf_file(bench.tmp / "mem.csv", "m", done, count + 200 - done)
        for server in bench.servers:
            res = sipp.run(sipp.cmd(server.port, bench.scenario("reg_auth.xml"), "-inf",
                                    str(inf), rate=rates[server.name],
                                    calls=count + 200 - done))  # fmt: skip
            if res.failed:
                bench.log(f"  {server.name}: {res.failed} registrations failed (memory test)")
        done = count + 200
        settle(bench.servers)
        for server in bench.servers:
            per = out[server.name][count] = (server.memory() - base[server.name]) / count
            bench.log(f"  {server.name:8} memory after {count} devices: {per:.0f} B/device")
    return out


def settle(servers: list[Server]) -> None:
    """Until the transactions of the last runs have ended (sipwake's Timer J: 32 s over
    UDP; Kamailio: tm's wait timer, 5 s, and the usrloc write-back, 2 s)."""
    time.sleep(6)
    deadline = time.monotonic() + 45
    for server in servers:
        while isinstance(server, Sipwake) and time.monotonic() < deadline:
            if server.stats()["transactions"]["server"] == 0:
                break
            time.sleep(1)


# ------------------------------------------------------------------- report
def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(
    args: argparse.Namespace,
    best: dict[tuple[str, str], list[Run]],
    same: dict[tuple[str, str], list[Run]],
    memory: dict[str, dict[int, float]],
    latency: dict[str, Any] | None,
) -> None:
    print()
    mode = "quick, one fixed rate per test" if args.quick else f"{args.rounds} interleaved rounds"
    print(f"sipwake vs Kamailio, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores "
          f"(server on core {args.server_core}, SIPp on core {args.client_core}), "
          f"{args.seconds:.0f} s runs, {mode}")  # fmt: skip
    print()
    names = [n for n in ("Kamailio", "baseline", "sipwake") if any(k[0] == n for k in best)]
    others = [n for n in names if n != "sipwake"]
    head = f"{'test':10}" + "".join(f"{n + ' max/s':>16}{n + ' us/op':>16}" for n in names)
    if not args.quick:
        head += "".join(f"{n + ' us/op =rate':>22}" for n in others)
    head += "".join(f"{'sipwake/' + n[:4]:>14}" for n in others if "sipwake" in names)
    print(head)
    print("-" * len(head))
    for test in args.tests:
        rate = {n: median([r.rate for r in best.get((n, test), [])]) for n in names}
        cpu = {n: median([r.cpu_per_op_us for r in best.get((n, test), [])]) for n in names}
        line = f"{test:10}" + "".join(f"{rate[n]:16.0f}{cpu[n]:16.0f}" for n in names)
        if not args.quick:
            # the others at sipwake's max rate of each round: the ratio's denominator
            cpu_same = {n: median([r.cpu_per_op_us for r in same.get((n, test), [])
                                   if r.ok]) for n in others}  # fmt: skip
            line += "".join(f"{cpu_same[n]:22.0f}" for n in others)
        else:
            cpu_same = {n: cpu[n] for n in others}  # quick: all ran at one rate already
        if "sipwake" in names:
            line += "".join(f"{cpu['sipwake'] / cpu_same[n]:14.2f}" for n in others)
        print(line)
    print(f"(max/s: the highest passing rate, median over rounds; us/op: server CPU per "
          f"{'/'.join(UNIT[t][:-1] for t in args.tests)} at that rate"
          + ("" if args.quick else "; '=rate': at sipwake's max rate of the same round")
          + "; sipwake/X: CPU per operation at the same rate, lower is better, 1.0 is parity)")
    if args.quick:
        print("(--quick: both at the same fixed rate; 'max/s' is that rate when it passed, "
              "0 when it failed)")
    if memory:
        print()
        for name, per in memory.items():
            what = "shm real_used delta" if name == "Kamailio" else "RSS delta"
            cells = ", ".join(f"{v / 1024:.2f} KB at {n} devices" for n, v in per.items())
            print(f"memory per registered device, {name:8} ({what}): {cells}")
    if latency:
        print()
        print(f"sipwake at half the parked maximum ({latency['rate']:.0f} flows/s, "
              f"{'passed' if latency['passed'] else 'FAILED'}):")  # fmt: skip
        for key, label in (("call_push", "INVITE in -> push out"),
                           ("register_to_invite", "REGISTER in -> INVITE out"),
                           ("call_push_accepted", "INVITE in -> push accepted")):  # fmt: skip
            s = latency["stats"][key]
            print(f"  {label:28} n={s['count']:6d}  p50 {s['p50_ms']:7.2f} ms"
                  f"  p99 {s['p99_ms']:7.2f} ms")  # fmt: skip
        print(f"  APNs stand-in: {latency['apns']}")


# --------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0, help="length of each measured run")
    p.add_argument("--probe-seconds", type=float, default=4.0)
    p.add_argument("--step", type=float, default=1.15, help="rate ladder factor")
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--tests", default=",".join(TESTS))
    p.add_argument("--devices", help="memory test: devices counts (20000,100000; --quick 5000)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--register-pool", type=int, default=20000)
    p.add_argument("--callees", type=int, default=1000)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--client-core", type=int, default=0)
    p.add_argument("--anchor", default=str(ANCHOR), help="kamailio.cfg and the scenarios")
    p.add_argument("--only", choices=("sipwake", "Kamailio"), help="run one server only")
    p.add_argument("--baseline", metavar="DIR",
                   help="also run the sipwake of another checkout (A/B in one run)")
    p.add_argument("--quick", action="store_true", help="development: fixed rates, < 2 min")
    p.add_argument("--quick-rates", default=",".join(f"{t}={r:.0f}" for t, r in
                                                     QUICK_RATES.items()))  # fmt: skip
    p.add_argument("--profile", metavar="PREFIX",
                   help="py-spy the sipwake server during its measured runs")
    p.add_argument("--max-failed", type=float, default=MAX_FAILED[0],
                   help="failed calls a passing run may have, a fraction (anchor: 0)")
    p.add_argument("--trace", action="store_true",
                   help="SIPp error logs (-trace_err), scratch directory kept")
    p.add_argument("--apns-standin", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.tests = [t for t in args.tests.split(",") if t]
    MAX_FAILED[0] = args.max_failed
    if args.quick:
        if args.rounds == p.get_default("rounds"):
            args.rounds = 1  # more for an A/B (--baseline): rounds alternate
        if args.seconds == p.get_default("seconds"):
            args.seconds = 4.0
        args.register_pool = min(args.register_pool, 3000)
        args.callees = min(args.callees, 200)
    if args.devices is None:  # asked for: kept, even when it is the full run's
        args.devices = "5000" if args.quick else "20000,100000"
    args.devices = [int(n) for n in str(args.devices).split(",") if n]
    args.rates = {k: float(v) for k, v in (kv.split("=") for kv in args.quick_rates.split(","))}
    return args


def main() -> None:
    args = parse_args()
    if args.apns_standin:
        standin_main(*args.apns_standin)
        return
    for exe in ("kamailio", "kamcmd", "sipp", "taskset"):
        if shutil.which(exe) is None and not (exe.startswith("kam") and args.only == "sipwake"):
            raise SystemExit(f"vs_kamailio: `{exe}` not found (apt-get install kamailio "
                             "kamailio-sqlite-modules sip-tester util-linux)")  # fmt: skip
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sipwake-vs-kamailio-"))
    # the largest parked run: rate ladders stay below ~3x the probe's best
    parked_pool = int(args.rates["parked"] * args.seconds) + 10 if args.quick else 0
    devices = max(args.devices, default=0) + 200
    users = [("r", args.register_pool), ("c", args.callees), ("m", devices),
             ("p", parked_pool or 60_000)]  # fmt: skip
    inf_file(tmp / "register.csv", "r", 0, args.register_pool)
    inf_file(tmp / "callees.csv", "c", 0, args.callees)
    apns = ApnsStandIn(tmp, args.client_core)
    t = time.perf_counter()
    servers: list[Server] = []
    if args.only != "sipwake":
        servers.append(Kamailio(tmp, args.server_core, Path(args.anchor), users))
    if args.baseline:
        servers.append(Sipwake(tmp, args.server_core, apns, users, args.baseline))
    if args.only != "Kamailio":
        servers.append(Sipwake(tmp, args.server_core, apns, users))
    print(f"provisioned {sum(n for _, n in users)} users per server in "
          f"{time.perf_counter() - t:.0f} s; scratch {tmp}")  # fmt: skip
    bench = Bench(args, tmp, Sipp(args.client_core, tmp), servers)
    if args.trace:
        bench.sipp.extra.append("-trace_err")
    best: dict[tuple[str, str], list[Run]] = {}
    memory: dict[str, dict[int, float]] = {}
    latency: dict[str, Any] | None = None
    same: dict[tuple[str, str], list[Run]] = {}  # runs at sipwake's max rate of the round
    spy: subprocess.Popen[bytes] | None = None
    try:
        for server in servers:
            server.start()
            # the register pool's devices exist before any measured REGISTER
            bench.sipp.run(bench.sipp.cmd(server.port, bench.scenario("reg_auth.xml"), "-inf",
                                          str(tmp / "register.csv"), rate=1000,
                                          calls=args.register_pool))  # fmt: skip
        if args.profile:
            sw = next(s for s in servers if s.name == "sipwake")
            pyspy = Path(sys.executable).parent / "py-spy"
            spy = subprocess.Popen(
                [str(pyspy) if pyspy.exists() else "py-spy", "record", "-p", str(sw.pid),
                 "-r", "200", "-f", "raw", "-o", args.profile,
                 # the compiled hot path shows as C functions (py-spy then pauses the
                 # process to sample: figures of a profiled run are a little high)
                 "--native"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        guesses: dict[tuple[str, str], float] = {}
        for rnd in range(1, args.rounds + 1):
            order = servers if rnd % 2 else servers[::-1]
            for test in args.tests:
                for server in order:
                    key = (server.name, test)
                    if args.quick:
                        run = bench.run_test(test, server, args.rates[test], rnd)
                        best.setdefault(key, []).append(run if run.passed else
                                                        _failed_at(run))  # fmt: skip
                        continue
                    if key not in guesses:
                        guesses[key] = bench.probe(test, server)
                    top = bench.climb(test, server, guesses[key], rnd)
                    if top is not None:
                        best.setdefault(key, []).append(top)
                        guesses[key] = max(guesses[key], top.rate)
                if args.quick:
                    continue
                # CPU per operation falls as the rate rises (fixed costs spread): the
                # ratio compares both at one rate, sipwake's highest passing one
                mine = [r for r in best.get(("sipwake", test), []) if r.round == rnd]
                for server in order:
                    if mine and server.name != "sipwake":
                        run = bench.run_test(test, server, mine[0].rate, rnd)
                        same.setdefault((server.name, test), []).append(run)
        if spy is not None:
            stop(spy, signal.SIGINT)
            spy = None
        if not args.no_latency and "parked" in args.tests:
            found = [s for s in servers if isinstance(s, Sipwake) and s.name == "sipwake"]
            if found:
                sw = found[0]
                runs = best.get(("sipwake", "parked"), [])
                passed = [r.rate for r in runs if r.passed]
                top_rate = median(passed) if passed else 0  # none passed: half the asked rate
                half = (top_rate or args.rates["parked"]) / 2
                sw.stats(reset=True)
                run = bench.parked(sw, half, 0)
                latency = {"rate": half, "passed": run.passed, "stats": sw.stats(),
                           "apns": apns.ask("stats")}  # fmt: skip
        if not args.no_memory and args.devices:
            memory = memory_test(bench, args.devices)
    finally:
        stop(spy, signal.SIGINT)
        for server in servers:
            server.stop()
        apns.stop()
    report(args, best, same, memory, latency)
    print(f"whole bench: {time.perf_counter() - started:.0f} s")
    if args.trace:
        print(f"scratch kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def _failed_at(run: Run) -> Run:
    """A quick run that failed: shown with rate 0, its CPU per operation kept."""
    return Run(run.server, run.test, run.round, 0.0, run.ok, run.failed, run.retrans_ratio,
               run.cpu)  # fmt: skip


if __name__ == "__main__":
    main()
