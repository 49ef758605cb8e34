"""A node under test in this process: its config (`make_config`: every listener on
127.0.0.1 port 0, SQLite in the test's folder) and, once started, `Running`, which adds
users and phones (tests/helpers/agent.py) to it. The fixtures that start one are in
tests/conftest.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sipwake.config import Config, load_config
from sipwake.server import Server
from sipwake.sip.digest import ha1
from sipwake.store.models import User
from tests.helpers.agent import Agent

DOMAIN = "example.com"
PG_DSN = os.environ.get("SIPWAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    cfg = load_config(None, env={})
    cfg.sip.domain = DOMAIN
    cfg.sip.realm = DOMAIN
    cfg.sip.listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
    cfg.sip.secret = "test-secret"
    cfg.http.listen = "127.0.0.1:0"
    cfg.store.url = f"sqlite:///{tmp_path}/sipwake.db"
    for section, values in sections.items():
        target = getattr(cfg, section)
        for key, value in values.items():
            setattr(target, key, value)
    return cfg


class Running:
    """A started server plus helpers to make users and phones talk to it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.agents: list[Agent] = []

    def addr(self, transport: str = "udp") -> tuple[str, int]:
        for listener in self.server.transport.listeners:
            if listener.transport == transport:
                return listener.host, listener.port
        raise LookupError(transport)

    async def add_user(self, name: str, password: str = "secret") -> User:
        realm = self.server.config.sip.realm
        user = User(
            name, DOMAIN, ha1(name, realm, password, "MD5"), ha1(name, realm, password, "SHA-256")
        )
        await self.server.store.put_user(user)
        return user

    async def phone(
        self, user: str, password: str = "secret", transport: str = "udp",
        host: str = "127.0.0.1",
    ) -> Agent:
        agent = Agent(user, password, DOMAIN, self.addr(transport), transport, local_host=host)
        await agent.start()
        self.agents.append(agent)
        return agent


ServerFactory = Callable[..., Awaitable[Running]]


def instance_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"
