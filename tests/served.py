"""The installed `sipwake serve` as a subprocess: what ships, on the loop it picks.

Starts the console script next to the running interpreter (the one `./test.sh`
installed), with a config in a temporary folder: every listener on port 0, the ports
read back from the server's own log lines, users added with `sipwake user add`. The
log is collected as it is written; `stop()` sends SIGTERM and returns the exit code.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.apns_standin import APNsStandIn
from tests.helpers.certs import self_signed
from tests.helpers.push import BUNDLE, KEY_ID, TEAM_ID

DOMAIN = "example.com"
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
_LISTENING = re.compile(r"SIP listening on (\w+):([^ ]+):(\d+)")
_HTTP = re.compile(r"HTTPS? listening on [^ ]*:(\d+)")


def sipwake_command() -> str:
    """The console script of this interpreter's environment (a venv's bin/)."""
    here = Path(sys.executable).parent / "sipwake"
    found = str(here) if here.exists() else shutil.which("sipwake")
    if not found:
        pytest.fail("no installed `sipwake` console script: pip install -e '.[test]'")
    return found


async def run_sipwake(
    *args: str, cwd: Path, timeout: float = 30, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run the console script to its end: (exit status, stdout and stderr together).
    `env` adds variables to the environment (which is cleared of SIPWAKE_* first)."""
    proc = await asyncio.create_subprocess_exec(
        sipwake_command(), *args, cwd=cwd, env=_env() | (env or {}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(timeout):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


def _env() -> dict[str, str]:
    # the tests' own SIPWAKE_* settings must not leak into the server under test; the
    # parser variant does (./test.sh runs the end-to-end tests with both)
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith("SIPWAKE_") or k == "SIPWAKE_PURE_PYTHON"
    }  # fmt: skip


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    workdir: Path
    sip: dict[str, tuple[str, int]] = field(default_factory=dict)  # transport → address
    http_port: int = 0
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    _lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.log.append(line)
            self._lines.put_nowait(line)

    async def wait_log(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The first line from now on that matches `pattern` (or one already seen)."""
        regex = re.compile(pattern)
        for line in self.log:
            if m := regex.search(line):
                return m
        async with asyncio.timeout(timeout):
            while True:
                if m := regex.search(await self._lines.get()):
                    return m

    def log_has(self, text: str) -> bool:
        return any(text in line for line in self.log)

    def tracebacks(self) -> list[str]:
        return [line for line in self.log if "Traceback" in line or "Error:" in line]

    async def stop(self, timeout: float = 15) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                if self._reader is not None:
                    await self._reader
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        return code


async def serve(
    workdir: Path,
    toml: str,
    *,
    loop: str = "auto",
    users: tuple[tuple[str, str], ...] = (("alice", "secret"), ("bob", "secret")),
    preexec: Callable[[], None] | None = None,
    args: tuple[str, ...] = (),
    ready: str = "serving domain",
) -> Served:
    """Write `toml` as the config (the store defaults to SQLite in `workdir`), add
    `users` with `sipwake user add`, start `sipwake serve` and wait until it serves."""
    if "[store]" not in toml:
        toml += '\n[store]\nurl = "sqlite:///sipwake.db"\n'
    config = workdir / "sipwake.toml"
    config.write_text(toml)
    for name, password in users:
        code, out = await run_sipwake(
            "user", "add", name, "--password", password, "--config", str(config), cwd=workdir
        )
        assert code == 0, out
    proc = await asyncio.create_subprocess_exec(
        sipwake_command(), "serve", "--config", str(config), "--loop", loop, *args,
        cwd=workdir, env=_env(), preexec_fn=preexec,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    served = Served(proc, workdir)
    served._reader = asyncio.ensure_future(served._read())
    try:
        await served.wait_log(ready, timeout=20)
    except TimeoutError:
        await served.stop()
        pytest.fail("sipwake serve did not start:\n" + "\n".join(served.log[-40:]))
    for line in served.log:
        if m := _LISTENING.search(line):
            served.sip.setdefault(m.group(1), (m.group(2).strip("[]"), int(m.group(3))))
        elif m := _HTTP.search(line):
            served.http_port = int(m.group(1))
    return served


def apns_config(tmp_path: Path, standin: APNsStandIn, key_file: str, ca_file: str) -> str:
    """A config with a listener of every transport (TLS ones on a self-signed certificate)
    whose pushes go to an APNs stand-in."""
    cert, key = self_signed(tmp_path)
    listen = ", ".join(f'"{t}:127.0.0.1:0"' for t in TRANSPORTS)
    return f"""
[sip]
domain = "{DOMAIN}"
listen = [{listen}]
tls_cert = "{cert}"
tls_key = "{key}"
secret = "e2e-secret"

[http]
listen = "127.0.0.1:0"

[calls]
park_timeout = 15

[push.apns]
team_id = "{TEAM_ID}"
key_id = "{KEY_ID}"
key_file = "{key_file}"
topic = "{BUNDLE}"
url = "{standin.url}"
sandbox_url = "{standin.url}"
ca_file = "{ca_file}"
"""
