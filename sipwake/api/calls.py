"""Call log and decline, for the callee's app."""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

import msgspec
from aiohttp import web
from msgspec import Meta

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error, reply
from sipwake.api.schema import UNAUTHORIZED, Json, error, query, returns
from sipwake.store.models import CallRecord, User

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class CallLog(Protocol):
    async def calls(
        self, aor: str, missed_only: bool = False, limit: int = 100
    ) -> list[CallRecord]: ...


class CallControl(Protocol):
    """The call service's answer to the push's Decline action."""

    def decline(self, call_id: str, user: User) -> str:
        """`declined`, or why not: `unknown`, `gone`, `forbidden` (another's call)."""
        ...

    async def logged(self) -> None:
        """Until the call-log rows of every call ended so far are stored."""


class Call(msgspec.Struct):
    call_id: Annotated[str, Meta(description="as in the call push")]
    caller_uri: str
    caller_number: str
    caller_name: str
    at: Annotated[int, Meta(description="unix seconds, call start")]
    ended_at: Annotated[int, Meta(description="unix seconds")]
    answered: bool
    missed: Annotated[bool, Meta(description="cancelled by the caller or timed out")]
    reason: Annotated[str, Meta(examples=["answered", "cancelled", "timeout", "declined",
                                          "busy", "failed"])]


class CallList(msgspec.Struct):
    calls: list[Call]


class Declined(msgspec.Struct):
    status: Literal["declined"]


BODIES = (CallList, Declined)


def openapi_paths() -> Json:
    return {
        "/v1/calls": {"get": {
            "summary": "The caller's call log, newest first",
            "parameters": [
                query("missed", {"type": "string", "default": "0", "examples": ["1"]},
                      "`1`, `true` or `yes`: missed calls only (cancelled or timed out); "
                      "anything else: every call"),
                query("limit", {"type": "integer", "default": DEFAULT_LIMIT},
                      f"an integer; values outside 1-{MAX_LIMIT} are clamped to it"),
            ],
            "responses": {"200": returns(CallList, "calls"),
                          "400": error("`limit` is not an integer"),
                          "401": UNAUTHORIZED},
        }},
        "/v1/calls/{call_id}/decline": {"post": {
            "summary": "Decline a ringing call (the push's Decline action)",
            "description": "The caller gets 603 Decline, the callee's phones still ringing "
                           "get a CANCEL, and the devices that were pushed a "
                           "`call_cancelled` push.",
            "parameters": [{
                "name": "call_id", "in": "path", "required": True,
                "description": "the `call_id` of the call push",
                "schema": {"type": "string"},
            }],
            "responses": {
                "200": returns(Declined, "declined"),
                "401": UNAUTHORIZED,
                "404": error("no such call ringing for the caller (`call unknown`; also for "
                             "someone else's call)"),
                "410": error("the call ended a short while ago: answered, cancelled, timed "
                             "out or declined (`call gone`)"),
            },
        }},
    }  # fmt: skip


def add_routes(
    app: web.Application, auth: ApiAuth, store: CallLog, calls: CallControl
) -> None:
    async def call_log(request: web.Request) -> web.Response:
        user = await auth.user(request)
        missed = request.query.get("missed", "0") in ("1", "true", "yes")
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
            limit = min(max(limit, 1), MAX_LIMIT)
        except ValueError:
            raise api_error(400, "invalid", "must be an integer", "limit") from None
        # rows are written behind the calls (calls/log.py): the app that got the
        # missed-call push and asks at once finds its call
        await calls.logged()
        records = await store.calls(user.aor, missed_only=missed, limit=limit)
        return reply(CallList([
            Call(r.call_id, r.caller_uri, r.caller_number, r.caller_name, int(r.started_at),
                 int(r.ended_at), r.answered, r.missed, r.reason)
            for r in records
        ]))  # fmt: skip

    async def decline(request: web.Request) -> web.Response:
        user = await auth.user(request)
        outcome = calls.decline(request.match_info["call_id"], user)
        if outcome == "declined":
            return reply(Declined("declined"))
        if outcome == "gone":
            raise api_error(410, "call gone", "the call has ended", "call_id")
        # not the callee: same answer as an unknown call, so ids can't be probed
        raise api_error(404, "call unknown", "no such call is ringing for you", "call_id")

    app.router.add_get("/v1/calls", call_log)
    app.router.add_post("/v1/calls/{call_id}/decline", decline)
