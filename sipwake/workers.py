"""`sipwake serve --workers N`: N worker processes behind the same listeners, so every
core serves (DESIGN "Cluster (settled)": a cluster on one box).

Each worker is a node of the cluster (the configuration must be a cluster's: Redis,
PostgreSQL, one secret) that binds the configured SIP and HTTP addresses with
SO_REUSEPORT: phones see one address and port. The kernel hands each source (for UDP
its address and port; for TCP each connection) to one worker, always the same while
the set of workers stays the same, so a phone's datagrams, its transactions and its
registration stay with one worker. Each worker has an internal TCP address of its own
on a free port: the other workers reach the phones it holds through it.

This parent only starts the workers, passes SIGTERM/SIGINT on, and starts again a
worker that died (its phones' UDP sources may move to another worker meanwhile; they
are served there after their next REGISTER).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from sipwake.config import Config, parse_listen

log = logging.getLogger("sipwake.workers")

RESTART_DELAY = 1.0  # seconds before a worker that died is started again
POLL = 0.2


def fixed_ports(config: Config) -> dict[str, str]:
    """Environment overrides giving every port-0 listener a port, the same for every
    worker (each would pick its own otherwise)."""
    env: dict[str, str] = {}
    specs = []
    for spec in config.sip.listen:
        listen = parse_listen(spec)
        port = listen.port or _free_port(listen.host, listen.transport == "udp")
        host = listen.host
        specs.append(f"{listen.transport}:{host}:{port}")
    if specs != list(config.sip.listen):
        env["SIPWAKE_SIP_LISTEN"] = ",".join(specs)
    http_host, _, http_port = config.http.listen.rpartition(":")
    if http_port == "0":
        env["SIPWAKE_HTTP_LISTEN"] = f"{http_host}:{_free_port(http_host, False)}"
    return env


def _free_port(host: str, udp: bool) -> int:
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as sock:
        sock.bind((bare, 0))
        port: int = sock.getsockname()[1]
        return port


def supervise(config: Config, config_path: str | None, loop: str, count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT; 0 when every one stopped cleanly."""
    env = os.environ | fixed_ports(config)

    def command(worker: int) -> list[str]:
        args = [sys.executable, "-m", "sipwake.cli", "serve", "--loop", loop,
                "--worker", str(worker)]  # fmt: skip
        return args + (["--config", config_path] if config_path else [])

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    procs = {i: subprocess.Popen(command(i), env=env) for i in range(count)}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("sipwake: %d workers started (pids %s)", count,
             ", ".join(str(p.pid) for p in procs.values()))  # fmt: skip
    codes: dict[int, int] = {}
    died: dict[int, float] = {}
    while True:
        for i, proc in procs.items():
            code = proc.poll()
            if code is None or i in codes:
                continue
            if stopping:
                codes[i] = code
            elif i not in died:
                log.error("worker %d (pid %d) exited with %d: starting it again", i,
                          proc.pid, code)  # fmt: skip
                died[i] = time.monotonic()
        for i, at in list(died.items()):
            if stopping:
                codes.setdefault(i, 1)
                del died[i]
            elif time.monotonic() - at >= RESTART_DELAY:
                procs[i] = subprocess.Popen(command(i), env=env)
                del died[i]
        if stopping and len(codes) == len(procs):
            break
        time.sleep(POLL)
    failed = {i: c for i, c in codes.items() if c != 0}
    if failed:
        log.error("workers stopped with errors: %s", failed)
    return 1 if failed else 0
