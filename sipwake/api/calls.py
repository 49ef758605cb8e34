"""Call log and decline, for the callee's app."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error
from sipwake.store.models import CallRecord, User


class CallLog(Protocol):
    async def calls(
        self, aor: str, missed_only: bool = False, limit: int = 100
    ) -> list[CallRecord]: ...


class CallControl(Protocol):
    """The call service's answer to the push's Decline action."""

    def decline(self, call_id: str, user: User) -> str:
        """`declined`, or why not: `unknown`, `gone`, `forbidden` (another's call)."""
        ...


def add_routes(
    app: web.Application, auth: ApiAuth, store: CallLog, calls: CallControl
) -> None:
    async def call_log(request: web.Request) -> web.Response:
        user = await auth.user(request)
        missed = request.query.get("missed", "0") in ("1", "true", "yes")
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            raise api_error(400, "invalid", "must be an integer", "limit") from None
        records = await store.calls(user.aor, missed_only=missed, limit=limit)
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
        user = await auth.user(request)
        outcome = calls.decline(request.match_info["call_id"], user)
        if outcome == "declined":
            return web.json_response({"status": "declined"})
        if outcome == "gone":
            raise api_error(410, "call gone", "the call has ended", "call_id")
        # not the callee: same answer as an unknown call, so ids can't be probed
        raise api_error(404, "call unknown", "no such call is ringing for you", "call_id")

    app.router.add_get("/v1/calls", call_log)
    app.router.add_post("/v1/calls/{call_id}/decline", decline)
