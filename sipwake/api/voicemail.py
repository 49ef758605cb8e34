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

from typing import Annotated, Protocol

import msgspec
from aiohttp import web
from msgspec import Meta

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error, invalid, read_body, reply, text
from sipwake.api.schema import SERVICE_AUTH, SERVICE_UNAUTHORIZED, Json, error, request, returns
from sipwake.store import models
from sipwake.voicemail import Report
from sipwake.voicemail.summary import MAX_COUNT, Caller, Counts, is_uri

MAX_BODY = 8 * 1024


class Users(Protocol):
    async def get_user(self, username: str, domain: str) -> models.User | None: ...


class MailboxChange(Protocol):
    @property
    def mailbox(self) -> models.Mailbox: ...  # the state now stored

    @property
    def rose(self) -> bool: ...  # the new count went up: a push is on its way


class MailboxReports(Protocol):
    """The voicemail service's webhook entry point."""

    async def report(self, aor: str, report: Report) -> MailboxChange: ...


def _text(description: str, max_length: int) -> Meta:
    return text(description, max_length=max_length, pattern=r"[^\x00-\x1f]*",
                says="must not contain control characters")


def _count(description: str) -> Meta:
    return Meta(ge=0, le=MAX_COUNT, description=description)


class VoicemailReport(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Counts are totals after the event: the same report sent twice changes nothing
    and pushes once. Strings are trimmed."""

    user: Annotated[str, _text("user name, or `sip:user@domain` (only the user part counts: "
                               "users are looked up in `[sip] domain`)", 256)]
    caller_uri: Annotated[str, _text("who left the voicemail", 2048)] = ""
    caller_name: Annotated[str, _text("their display name", 1024)] = ""
    account: Annotated[str, _text("Message-Account URI devices are told (e.g. "
                                  "`sip:alice@vm.example.com`); empty or left out keeps "
                                  "the stored one", 2048)] = ""
    new: Annotated[int, _count("new voice messages: the mailbox's total now, not an "
                               "increment")]
    old: Annotated[int, _count("old voice messages: the mailbox's total now")]
    urgent_new: Annotated[int, _count("urgent ones among the new")] = 0
    urgent_old: Annotated[int, _count("urgent ones among the old")] = 0
    duration: Annotated[int, _count("length of the voicemail just left, in seconds")] = 0
    waiting: Annotated[bool | None, Meta(
        description="Messages-Waiting; left out or null: `new` > 0")] = None


FIELDS = frozenset(VoicemailReport.__struct_fields__)


class Mailbox(msgspec.Struct):
    user: Annotated[str, Meta(description="the user's address of record, `sip:user@domain`")]
    waiting: bool
    new: int
    old: int
    urgent_new: int
    urgent_old: int
    pushed: Annotated[bool, Meta(description="the new count rose: a `voicemail` push is on "
                                             "its way to the user's devices")]


BODIES = (VoicemailReport, Mailbox)


def openapi_paths() -> Json:
    return {"/v1/voicemail": {"post": {
        "summary": "Voicemail webhook: a voicemail system reports a mailbox",
        "description": "For voicemail systems without SIP MWI. The state is stored; when "
                       "the new count rose, every enabled device of the user gets a "
                       "`voicemail` push; when what devices show changed, the online ones "
                       "get a NOTIFY.",
        "security": SERVICE_AUTH,
        "requestBody": request(VoicemailReport),
        "responses": {
            "200": returns(Mailbox, "the stored state"),
            "400": error("not JSON, or not an object"),
            "401": SERVICE_UNAUTHORIZED,
            "404": error("no such user (`field`: `user`)"),
            "413": error(f"body over {MAX_BODY} bytes"),
            "422": error("a field is missing, unknown, or invalid; `field` names it"),
        },
    }}}  # fmt: skip


def add_routes(
    app: web.Application, auth: ApiAuth, users: Users, voicemail: MailboxReports
) -> None:
    domain = auth.settings.domain

    async def post(request: web.Request) -> web.Response:
        auth.service(request)
        report, user = _report(await read_body(request, VoicemailReport, MAX_BODY))
        if await users.get_user(user, domain) is None:
            raise api_error(404, "not_found", f"no user {user!r}", "user")
        change = await voicemail.report(f"sip:{user}@{domain}", report)
        m = change.mailbox
        return reply(Mailbox(m.aor, m.waiting, m.new_count, m.old_count, m.urgent_new,
                                  m.urgent_old, pushed=change.rose))

    app.router.add_post("/v1/voicemail", post)


def _report(body: VoicemailReport) -> tuple[Report, str]:
    """The report in a webhook body and the user it is for; 422 naming the bad field."""
    user = body.user.strip().removeprefix("sip:").split("@")[0]
    if not user:
        raise invalid("user", "user must be a user name or sip:user@domain")
    account = body.account.strip()
    if account and not is_uri(account):
        raise invalid("account", "account must be a URI such as sip:alice@vm.example.com")
    report = Report(
        waiting=body.waiting,
        account=account,
        voice=Counts(body.new, body.old, body.urgent_new, body.urgent_old),
        caller=Caller(body.caller_uri.strip(), body.caller_name.strip(), body.duration),
        source="webhook",
    )
    return report, user
