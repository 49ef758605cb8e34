"""The HTTP side of a node: the app-facing API, the voicemail webhook, metrics and
`/healthz`. It gets what it uses as `ApiDeps` (server.py fills them in), never the node."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from sipwake.api import admin, calls, console, dev, devices, openapi, tokens
from sipwake.api import messages as messages_api
from sipwake.api import voicemail as voicemail_api
from sipwake.api.auth import ApiAuth, ApiSettings, Authenticator, TokenStore, UserLookup
from sipwake.api.jsonapi import api_error
from sipwake.lograte import LogRate
from sipwake.store.errors import unavailable

__all__ = ["ApiDeps", "ApiSettings", "HttpApi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("sipwake.api")


class ApiStore(
    devices.DeviceStore, TokenStore, calls.CallLog, messages_api.MessageStore,
    voicemail_api.Users, Protocol,
):  # fmt: skip
    """Every part of the store the API reads or writes (`sipwake.store.base.Store`)."""


@dataclass(frozen=True, slots=True)
class ApiDeps:
    settings: ApiSettings
    store: ApiStore
    admission: Authenticator  # sipwake.auth.Admission
    users: UserLookup  # sipwake.auth.UserDirectory
    registry: devices.DeviceRegistry  # the registrar
    inbox: messages_api.InboxEvents
    calls: calls.CallControl
    voicemail: voicemail_api.MailboxReports
    sink: dev.PushRecord | None  # the developer sink; None with a push provider configured
    metrics: admin.NodeMetrics  # sipwake.metrics.Metrics
    counts: admin.Counts  # live counts for /v1/admin/stats: calls, transactions
    console: console.ConsoleSources | None = None  # /admin and its JSON; None: not served


class HttpApi:
    def __init__(self, deps: ApiDeps) -> None:
        self.store = deps.store
        self.app = web.Application(client_max_size=1024 * 1024, middlewares=[self._outages])
        self._outage_log = LogRate(60.0)
        auth = ApiAuth(deps.settings, deps.admission, deps.users, deps.store)
        self.app.router.add_get("/healthz", self.healthz)
        calls.add_routes(self.app, auth, deps.store, deps.calls)
        admin.add_routes(self.app, auth, deps.metrics, deps.counts)
        devices.add_routes(self.app, auth, deps.store, deps.registry)
        tokens.add_routes(self.app, auth)
        dev.add_routes(self.app, auth, deps.sink, deps.store)
        openapi.add_routes(self.app)
        messages_api.add_routes(self.app, auth, deps.store, deps.inbox)
        voicemail_api.add_routes(self.app, auth, deps.store, deps.voicemail)
        if deps.console is not None:
            console.add_routes(self.app, auth, deps.console)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(
        self, listen: str, tls: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> None:
        host, _, port = listen.rpartition(":")
        # a stop waits this long for requests in flight, not aiohttp's default minute
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]") or "127.0.0.1", int(port),
                           ssl_context=tls, reuse_port=reuse_port or None)  # fmt: skip
        await site.start()
        for sock in getattr(site._server, "sockets", None) or ():
            self.port = sock.getsockname()[1]
        log.info("HTTP%s listening on %s:%d", "S" if tls else "", host, self.port)

    @web.middleware
    async def _outages(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """While the store is failing: 503 + Retry-After, one log line a minute."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            outage = unavailable(exc)
            if outage is None:
                raise
            skipped = self._outage_log.due(outage.kind)
            if skipped is not None:
                log.error("store unavailable (%s): %s %s answered 503%s", outage,
                          request.method, request.path,
                          f"; {skipped} more since the last line" if skipped else "")  # fmt: skip
            raise api_error(503, "unavailable", "the store is unavailable: try again later",
                            headers={"Retry-After": "5"}) from None

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.get_user("-", "-")  # the store answers
        except Exception as exc:
            log.warning("health check: store down: %s", exc)
            raise api_error(503, "unavailable", "the store is unavailable",
                            status="store unavailable") from None
        return web.json_response({"status": "ok"})
