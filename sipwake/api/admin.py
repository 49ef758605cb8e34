"""Operators' view of a node: Prometheus metrics and a JSON snapshot for benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sipwake.api.auth import ApiAuth

Counts = Mapping[str, Callable[[], Mapping[str, int]]]  # name in the snapshot → live counts


class Latency(Protocol):
    def summary(self) -> dict[str, float]: ...  # count, p50_ms, p99_ms

    def reset(self) -> None: ...


class NodeMetrics(Protocol):
    """What the node measures (`sipwake.metrics.Metrics`)."""

    @property
    def registry(self) -> CollectorRegistry: ...

    @property
    def call_push(self) -> Latency: ...

    @property
    def call_push_accepted(self) -> Latency: ...

    @property
    def register_invite(self) -> Latency: ...

    async def refresh(self) -> None:
        """Bring the readings that need the store up to date (cached)."""


def add_routes(
    app: web.Application, auth: ApiAuth, metrics: NodeMetrics, counts: Counts
) -> None:
    async def prometheus(request: web.Request) -> web.Response:
        await metrics.refresh()
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    latencies = {
        "call_push": metrics.call_push,
        "call_push_accepted": metrics.call_push_accepted,
        "register_to_invite": metrics.register_invite,
    }

    async def stats(request: web.Request) -> web.Response:
        auth.service(request)
        if request.query.get("reset") in ("1", "true"):
            for latency in latencies.values():
                latency.reset()
        snapshot: dict[str, object] = {name: m.summary() for name, m in latencies.items()}
        snapshot.update({name: dict(count()) for name, count in counts.items()})
        return web.json_response(snapshot)

    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/admin/stats", stats)
