"""Shared fixtures: a real server on 127.0.0.1 with a real store, and test phones
(what they are built from is in tests/helpers/node.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sipwake.config import Config
from sipwake.server import Server
from tests.helpers.apns_standin import APNsStandIn
from tests.helpers.calls import TRUSTED
from tests.helpers.certs import make_certs
from tests.helpers.node import PG_DSN, Running, ServerFactory, make_config
from tests.helpers.push import BUNDLE, KEY_ID, TEAM_ID, write_apns_key


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    running: list[Running] = []

    async def start(config: Config | None = None, **sections: dict[str, Any]) -> Running:
        server = Server(config or make_config(tmp_path, **sections))
        await server.start()
        r = Running(server)
        running.append(r)
        return r

    yield start
    for r in running:
        for a in r.agents:
            a.close()
        await r.server.stop()


@pytest.fixture
async def running(start_server: ServerFactory) -> Running:
    return await start_server()


@pytest.fixture
async def calls(start_server: ServerFactory) -> Running:
    """A node for call tests: 127.0.0.1 trusted, a 5 s park, users alice and bob."""
    r = await start_server(sip=TRUSTED, calls={"park_timeout": 5, "alert_repeat": 15})
    await r.add_user("alice")
    await r.add_user("bob")
    return r


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema on the machine's real server, dropped afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_DSN}?schema={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def apns(tmp_path: Path) -> AsyncIterator[tuple[APNsStandIn, str, str]]:
    """A strict APNs stand-in over TLS with its own CA: (stand-in, key file, CA file)."""
    certs = make_certs(tmp_path)
    key_file, key = write_apns_key(tmp_path)
    standin = APNsStandIn(
        team_id=TEAM_ID, key_id=KEY_ID, public_key=key.public_key(), topics={BUNDLE},
        ssl_context=certs.server_context(["h2"]),
    )  # fmt: skip
    await standin.start()
    yield standin, key_file, certs.ca_file
    await standin.close()
