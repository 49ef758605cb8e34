"""Call log and decline, for the callee's app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from sipwake.api.auth import require_user

if TYPE_CHECKING:
    from sipwake.server import Server


def add_routes(app: web.Application, server: Server) -> None:
    async def call_log(request: web.Request) -> web.Response:
        user = await require_user(request, server)
        missed = request.query.get("missed", "0") in ("1", "true", "yes")
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            raise web.HTTPBadRequest(
                text='{"error": "invalid", "field": "limit"}', content_type="application/json"
            ) from None
        records = await server.store.calls(user.aor, missed_only=missed, limit=limit)
        return web.json_response(
            {
                "calls": [
                    {
                        "call_id": r.call_id,
                        "caller_uri": r.caller_uri,
                        "caller_number": r.caller_number,
                        "caller_name": r.caller_name,
                        "at": int(r.started_at),
                        "ended_at": int(r.ended_at),
                        "answered": r.answered,
                        "missed": r.missed,
                        "reason": r.reason,
                    }
                    for r in records
                ]
            }
        )

    async def decline(request: web.Request) -> web.Response:
        user = await require_user(request, server)
        outcome = server.calls.decline(request.match_info["call_id"], user)
        if outcome == "declined":
            return web.json_response({"status": "declined"})
        if outcome == "forbidden":
            # not the callee: same answer as an unknown call, so ids can't be probed
            outcome = "unknown"
        status = 410 if outcome == "gone" else 404
        return web.json_response({"error": f"call {outcome}"}, status=status)

    app.router.add_get("/v1/calls", call_log)
    app.router.add_post("/v1/calls/{call_id}/decline", decline)
