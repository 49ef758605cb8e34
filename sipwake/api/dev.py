"""`GET /v1/dev/pushes`: what the caller's apps would have received.

Only while no push provider is configured (pushes go to the developer sink, see
push/sink.py); 404 otherwise. Newest first; `?limit=` (1-200, default 50) and
`?device_id=` narrow it down. A user sees the pushes to their own devices only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error
from sipwake.api.schema import UNAUTHORIZED, Json, error, query, returns
from sipwake.store.models import Device

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
PushType = Literal["call", "call_cancelled", "missed_call", "message", "voicemail"]


class PushRecord(Protocol):
    """The developer sink (`sipwake.push.sink.PushSink`): pushes kept instead of sent."""

    def pushes(
        self, limit: int | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]: ...


class OwnDevices(Protocol):
    async def devices(self, aor: str) -> list[Device]: ...


class Push(msgspec.Struct):
    """A push as it would have been sent (the sink's record, push/sink.py)."""

    provider: Literal["apns", "fcm"] | UnsetType = UNSET
    device_id: str | UnsetType = UNSET
    type: PushType | UnsetType = UNSET
    push_id: str | UnsetType = UNSET
    sandbox: bool | UnsetType = UNSET
    headers: dict[str, str] | UnsetType = UNSET
    payload: Annotated[dict[str, Any] | UnsetType,
                       Meta(description="APNs payload, or FCM message")] = UNSET
    at: float | UnsetType = UNSET
    size: Annotated[int | UnsetType, Meta(description="body bytes")] = UNSET


class PushList(msgspec.Struct):
    pushes: list[Push]


BODIES = (PushList,)


def openapi_paths() -> Json:
    return {"/v1/dev/pushes": {"get": {
        "summary": "Pushes the caller's devices would have received (no provider configured)",
        "parameters": [
            query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT}),
            query("device_id", {"type": "string"}),
        ],
        "responses": {"200": returns(PushList, "newest first"),
                      "400": error("bad limit"),
                      "401": UNAUTHORIZED,
                      "404": error("a push provider is configured: no sink")},
    }}}  # fmt: skip


def add_routes(
    app: web.Application, auth: ApiAuth, sink: PushRecord | None, store: OwnDevices
) -> None:
    async def pushes(request: web.Request) -> web.Response:
        user = await auth.user(request)
        if sink is None:
            raise api_error(404, "not_found", "a push provider is configured: no sink")
        text = request.query.get("limit", str(DEFAULT_LIMIT))
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise api_error(400, "bad_request", f"limit must be 1-{MAX_LIMIT}", "limit")
        wanted = request.query.get("device_id")
        own = {d.device_id for d in await store.devices(user.aor)}
        shown = [
            p for p in sink.pushes(device_id=wanted)
            if p["device_id"] in own
        ][: int(text)]
        return web.json_response({"pushes": shown})

    app.router.add_get("/v1/dev/pushes", pushes)
