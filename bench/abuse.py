"""What SIPVicious learns from sipwake: the scanner the security review used.

    pip install sipvicious==0.3.8 && python bench/abuse.py

Starts the installed `sipwake serve` (console script next to this interpreter) on
loopback with users 1000-1004, then:
- `svwar` (REGISTER, INVITE and OPTIONS) over extensions 990-1010: which it reports
  as existing — it must not be able to tell the five real ones from the rest;
- `svcrack` against user 1002 with a dictionary of 60 words whose 40th is the
  password (and again with `--reusenonce`): it must not find it, the throttle
  refusing that address after 20 failures (a cracker left waiting is stopped at 30 s);
- the right password from 127.0.0.3 still registers.
Prints one line per check, exits 1 when one fails. Loopback only, under a minute.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.agent import Agent
from tests.helpers.ports import free_port

DOMAIN = "example.com"
USERS = [str(n) for n in range(1000, 1005)]
PASSWORD = "tr0ub4dor&3"


def tool(name: str) -> str:
    here = Path(sys.executable).parent / f"sipvicious_{name}"
    found = str(here) if here.exists() else shutil.which(f"sipvicious_{name}")
    if not found:
        sys.exit("sipvicious is not installed: pip install sipvicious==0.3.8")
    return found


def run(args: list[str], timeout: float = 30) -> str:
    """The tool's output; a tool still waiting for answers at `timeout` is stopped."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return _text(exc.stdout) + _text(exc.stderr) + "\n(stopped: still waiting for answers)"
    return done.stdout + done.stderr


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def found_extensions(out: str) -> set[str]:
    """svwar's table rows: | Extension | Authentication |."""
    rows = set()
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|") if c.strip()]
        if len(cells) == 2 and cells[0].isdigit():
            rows.add(cells[0])
    return rows


async def register(port: int, host: str) -> int:
    agent = await Agent("1002", PASSWORD, DOMAIN, ("127.0.0.1", port), local_host=host).start()
    try:
        return (await agent.register()).status
    finally:
        agent.close()


def main() -> int:
    sipwake = Path(sys.executable).parent / "sipwake"
    if not sipwake.exists():
        sys.exit("no sipwake console script next to this interpreter: pip install .")
    tmp = Path(tempfile.mkdtemp(prefix="sipwake-abuse-"))
    port, http = free_port(socket.SOCK_DGRAM), free_port()
    config = tmp / "sipwake.toml"
    config.write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:{port}"]\nsecret = "abuse"\n'
        f'[http]\nlisten = "127.0.0.1:{http}"\n[store]\nurl = "sqlite:///sipwake.db"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPWAKE_")}
    for user in USERS:
        subprocess.run([str(sipwake), "user", "add", user, "--password", PASSWORD,
                        "--config", str(config)], cwd=tmp, env=env, check=True,
                       capture_output=True)  # fmt: skip
    server = subprocess.Popen([str(sipwake), "serve", "--config", str(config)], cwd=tmp,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    failures = 0
    try:
        time.sleep(1.5)  # a subprocess we don't read from: give it time to bind
        target = f"udp://127.0.0.1:{port}"
        for method in ("REGISTER", "INVITE", "OPTIONS"):
            out = run([tool("svwar"), "-e990-1010", "-m", method, "--domain", DOMAIN,
                       "--force", target])  # fmt: skip
            found = found_extensions(out)
            real = found & set(USERS)
            # telling them apart means reporting the real ones and not the others
            told = bool(real) and len(found) < 21
            print(f"svwar {method:8}: reports {len(found)} of 21 extensions, "
                  f"{len(real)} of the 5 real ones -> "
                  f"{'CAN tell them apart' if told else 'cannot tell them apart'}")
            failures += told
        words = [f"guess{i:02d}" for i in range(60)]
        words[39] = PASSWORD
        (tmp / "words.txt").write_text("\n".join(words) + "\n")
        for extra in ([], ["--reusenonce"]):
            started = time.monotonic()
            out = run([tool("svcrack"), "-u", "1002", "-d", str(tmp / "words.txt"),
                       "--domain", DOMAIN, *extra, target])  # fmt: skip
            cracked = PASSWORD in out
            label = " ".join(["svcrack", *extra])
            print(f"{label:22}: {'FOUND the password' if cracked else 'did not find it'} "
                  f"({time.monotonic() - started:.1f} s)")
            failures += cracked
        # svcrack sends from 127.0.0.1 whatever -b says (the kernel's source for a
        # datagram to 127.0.0.1): that address is refused now, another is not
        blocked = asyncio.run(register(port, "127.0.0.1"))
        other = asyncio.run(register(port, "127.0.0.3"))
        print(f"right password from 127.0.0.1: {blocked} (refused while throttled)")
        print(f"right password from 127.0.0.3: {other}")
        failures += blocked != 403
        failures += other != 200
    finally:
        server.terminate()
        server.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)
    print("abuse: all checks passed" if not failures else f"abuse: {failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
