"""Operators' view of a node: Prometheus metrics and a JSON snapshot for benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sipwake.api.auth import require_service

if TYPE_CHECKING:
    from sipwake.server import Server


def add_routes(app: web.Application, server: Server) -> None:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(server.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats(request: web.Request) -> web.Response:
        require_service(request, server)
        if request.query.get("reset") in ("1", "true"):
            server.metrics.call_push.reset()
            server.metrics.call_push_accepted.reset()
            server.metrics.register_invite.reset()
        return web.json_response(
            {
                "call_push": server.metrics.call_push.summary(),
                "call_push_accepted": server.metrics.call_push_accepted.summary(),
                "register_to_invite": server.metrics.register_invite.summary(),
                "calls": server.calls.counts(),
                "transactions": server.transactions.counts(),
            }
        )

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/admin/stats", stats)
