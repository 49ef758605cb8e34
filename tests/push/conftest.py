from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sipwake.push import APNsProvider, APNsSettings, FCMProvider, FCMSettings, PushService
from sipwake.testing import ManualScheduler
from tests.helpers.apns_standin import APNsStandIn
from tests.helpers.certs import Certs, make_certs
from tests.helpers.clock import Sleeps
from tests.helpers.fcm_standin import FCMStandIn
from tests.helpers.push import (
    BUNDLE,
    KEY_ID,
    PROJECT,
    SA_EMAIL,
    SA_KEY_ID,
    TEAM_ID,
    MemoryPushLog,
    write_apns_key,
    write_service_account,
)
from tests.store.conftest import backend  # noqa: F401  (SQLite and PostgreSQL stores)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def apns_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ec.EllipticCurvePrivateKey]:
    return write_apns_key(tmp_path_factory.mktemp("apns"))


@pytest.fixture(scope="session")
def service_account(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPrivateKey]:
    # token_uri points nowhere useful: the config's token_url must win over it.
    path, key = write_service_account(tmp_path_factory.mktemp("fcm"),
                                      "https://oauth2.invalid/token")
    return Path(path), key


@pytest.fixture
def clock() -> ManualScheduler:
    return ManualScheduler(float(int(time.time())))  # whole seconds: exact TTLs in asserts


@pytest.fixture
def sleeps(clock: ManualScheduler) -> Sleeps:
    """The services' sleep: the clock moves on at once, the lengths are kept."""
    return Sleeps(clock)


@pytest.fixture
def store() -> MemoryPushLog:
    return MemoryPushLog()


@pytest.fixture
async def apns_server(
    apns_key: tuple[str, ec.EllipticCurvePrivateKey], clock: ManualScheduler
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await apns_server(**standin_options)` → a started APNs stand-in."""
    servers: list[APNsStandIn] = []

    async def make(**options: Any) -> APNsStandIn:
        options.setdefault("clock", clock.time)
        server = APNsStandIn(team_id=TEAM_ID, key_id=KEY_ID,
                             public_key=apns_key[1].public_key(), topics={BUNDLE}, **options)
        servers.append(await server.start())
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def apns_push(
    apns_key: tuple[str, ec.EllipticCurvePrivateKey], clock: ManualScheduler, sleeps: Sleeps,
    store: MemoryPushLog,
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `apns_push(server, sandbox=None, **settings)` → (service, provider)."""
    services: list[PushService] = []

    def make(server: APNsStandIn, sandbox: APNsStandIn | None = None,
             service_options: dict[str, Any] | None = None,
             **settings: Any) -> tuple[PushService, APNsProvider]:
        if server.ssl_context is None:
            settings.setdefault("allow_insecure", True)
        provider = APNsProvider(
            APNsSettings(team_id=TEAM_ID, key_id=KEY_ID, key_file=apns_key[0], topic=BUNDLE,
                         url=server.url, sandbox_url=(sandbox or server).url, **settings),
            clock=clock.time,
        )
        options: dict[str, Any] = {"clock": clock.time, "sleep": sleeps, "rand": lambda: 0.5}
        options.update(service_options or {})
        service = PushService(options.pop("store", store), apns=provider, **options)
        services.append(service)
        return service, provider

    yield make
    for service in services:
        await service.close()


@pytest.fixture
async def fcm_server(
    service_account: tuple[Path, rsa.RSAPrivateKey], clock: ManualScheduler
) -> AsyncIterator[Callable[..., Any]]:
    servers: list[FCMStandIn] = []

    async def make(**options: Any) -> FCMStandIn:
        options.setdefault("clock", clock.time)
        server = FCMStandIn(project_id=PROJECT, client_email=SA_EMAIL, key_id=SA_KEY_ID,
                            public_key=service_account[1].public_key(), **options)
        servers.append(await server.start())
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def fcm_push(
    service_account: tuple[Path, rsa.RSAPrivateKey], clock: ManualScheduler, sleeps: Sleeps,
    store: MemoryPushLog,
) -> AsyncIterator[Callable[..., Any]]:
    services: list[PushService] = []

    def make(server: FCMStandIn, service_options: dict[str, Any] | None = None,
             **settings: Any) -> tuple[PushService, FCMProvider]:
        if server.ssl_context is None:
            settings.setdefault("allow_insecure", True)
        provider = FCMProvider(
            FCMSettings(project_id=PROJECT, service_account_file=str(service_account[0]),
                        url=server.url, token_url=server.token_url, **settings),
            clock=clock.time,
        )
        options: dict[str, Any] = {"clock": clock.time, "sleep": sleeps, "rand": lambda: 0.5}
        options.update(service_options or {})
        service = PushService(options.pop("store", store), fcm=provider, **options)
        services.append(service)
        return service, provider

    yield make
    for service in services:
        await service.close()
