"""The server as operators run it: CLI, config file, TLS, health, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.helpers.certs import self_signed
from tests.helpers.node import DOMAIN, ServerFactory
from tests.helpers.ports import free_port

APNS = ";pn-provider=apns;pn-prid=" + "ab" * 32 + ";pn-param=ABCD123456.com.example.dialer.voip"


async def test_register_over_tls(start_server: ServerFactory, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    r = await start_server(
        sip={"listen": ["udp:127.0.0.1:0", "tls:127.0.0.1:0"], "tls_cert": cert, "tls_key": key}
    )
    await r.add_user("alice")
    phone = await r.phone("alice", transport="tls")
    resp = await phone.register(params=APNS)
    assert resp.status == 200
    (binding,) = r.server.registrar.live_bindings(f"sip:alice@{DOMAIN}")
    assert binding.flow.startswith("tls-") and binding.received.startswith("tls:")


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipwake.cli", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_cli_user_add_serve_health_and_sigterm(tmp_path: Path) -> None:
    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    config = tmp_path / "sipwake.toml"
    config.write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:{sip_port}"]\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        '[store]\nurl = "sqlite:///from-file.db"\n'
    )
    # the environment overrides the file: the store lands where the env says
    env = dict(os.environ, SIPWAKE_STORE_URL=f"sqlite:///{tmp_path}/env.db")
    code, out = await run_cli("user", "add", "alice", "--password", "pw", "--config", str(config), env=env)
    assert code == 0, out
    assert (tmp_path / "env.db").exists()
    code, out = await run_cli("user", "list", "--config", str(config), env=env)
    header, row, count = out.strip().splitlines()
    assert (header.split()[0], row.split()[0], count) == ("AOR", f"sip:alice@{DOMAIN}",
                                                          f"1 user in {DOMAIN}")

    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipwake.cli", "serve", "--config", str(config),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        async with asyncio.timeout(15):
            while b"serving domain" not in await server.stdout.readline():
                pass
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{http_port}/healthz") as resp:
                assert resp.status == 200
                assert (await resp.json()) == {"status": "ok"}
        from tests.helpers.agent import Agent

        phone = await Agent("alice", "pw", DOMAIN, ("127.0.0.1", sip_port)).start()
        assert (await phone.register(params=APNS)).status == 200
        phone.close()
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = await server.stdout.read()
            assert await server.wait() == 0
        assert b"sipwake stopped" in rest
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def test_bad_config_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[sip]\ndomian = "typo.example"\n')
    code, out = await run_cli("serve", "--config", str(config), env=dict(os.environ))
    assert code == 2 and "domian" in out
