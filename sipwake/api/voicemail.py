"""Voicemail webhook: a voicemail system without SIP MWI reports a mailbox over HTTP.

    POST /v1/voicemail        Authorization: Bearer <[http] api_token>
    {"user": "alice", "caller_uri": "sip:bob@example.com", "caller_name": "Bob",
     "duration": 42, "new": 2, "old": 5}

Counts are the mailbox's totals after the event, not increments: the same report
sent twice changes nothing (and pushes once). Optional: `urgent_new`, `urgent_old`,
`waiting` (default: new > 0), `account` (the Message-Account URI devices are told).
The answer is the stored state and whether a push went out (`pushed`).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error, invalid, read_json_object
from sipwake.store.models import Mailbox, User
from sipwake.voicemail import Report
from sipwake.voicemail.summary import MAX_COUNT, Caller, Counts, is_uri

MAX_BODY = 8 * 1024
MAX_TEXT = {"user": 256, "caller_uri": 2048, "caller_name": 1024, "account": 2048}
COUNTS = ("new", "old", "urgent_new", "urgent_old", "duration")
REQUIRED = ("user", "new", "old")
FIELDS = frozenset((*MAX_TEXT, *COUNTS, "waiting"))


class Users(Protocol):
    async def get_user(self, username: str, domain: str) -> User | None: ...


class MailboxChange(Protocol):
    @property
    def mailbox(self) -> Mailbox: ...  # the state now stored

    @property
    def rose(self) -> bool: ...  # the new count went up: a push is on its way


class MailboxReports(Protocol):
    """The voicemail service's webhook entry point."""

    async def report(self, aor: str, report: Report) -> MailboxChange: ...


def add_routes(
    app: web.Application, auth: ApiAuth, users: Users, voicemail: MailboxReports
) -> None:
    domain = auth.settings.domain

    async def post(request: web.Request) -> web.Response:
        auth.service(request)
        body = await read_json_object(request, MAX_BODY)
        report, user = _report(body)
        if await users.get_user(user, domain) is None:
            raise api_error(404, "not_found", f"no user {user!r}", "user")
        change = await voicemail.report(f"sip:{user}@{domain}", report)
        m = change.mailbox
        return web.json_response({
            "user": m.aor, "waiting": m.waiting, "new": m.new_count, "old": m.old_count,
            "urgent_new": m.urgent_new, "urgent_old": m.urgent_old, "pushed": change.rose,
        })  # fmt: skip

    app.router.add_post("/v1/voicemail", post)


def _report(body: dict[str, Any]) -> tuple[Report, str]:
    """The report in a webhook body and the user it is for; 422 naming the bad field."""
    for name in sorted(body):
        if name not in FIELDS:
            raise invalid(name, f"unknown field {name!r}")
    for name in REQUIRED:
        if name not in body:
            raise invalid(name, f"{name} is required")
    text = {name: _text(body, name) for name in MAX_TEXT}
    counts = {name: _count(body, name) for name in COUNTS}
    waiting = body.get("waiting")
    if waiting is not None and not isinstance(waiting, bool):
        raise invalid("waiting", "waiting must be true or false")
    user = text["user"].removeprefix("sip:").split("@")[0]
    if not user:
        raise invalid("user", "user must be a user name or sip:user@domain")
    if text["account"] and not is_uri(text["account"]):
        raise invalid("account", "account must be a URI such as sip:alice@vm.example.com")
    report = Report(
        waiting=waiting,
        account=text["account"],
        voice=Counts(counts["new"], counts["old"], counts["urgent_new"], counts["urgent_old"]),
        caller=Caller(text["caller_uri"], text["caller_name"], counts["duration"]),
        source="webhook",
    )
    return report, user


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise invalid(name, f"{name} must be a string")
    if len(value) > MAX_TEXT[name]:
        raise invalid(name, f"{name} is longer than {MAX_TEXT[name]} characters")
    if any(ord(c) < 32 for c in value):
        raise invalid(name, f"{name} must not contain control characters")
    return value.strip()


def _count(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise invalid(name, f"{name} must be an integer from 0 to {MAX_COUNT}")
    return value
