"""Inbox API: the app downloads its messages instead of waiting for SIP delivery.

    GET  /v1/messages?after=<id>&limit=<n>   the caller's messages with id > after,
                                             oldest first (at most `limit`, ≤ 500)
    POST /v1/messages/ack   {"ids": [1, 2]}  mark them read: delivered, and no longer
                                             sent over SIP on the next registration

Ids only grow and are never reused, and a user's messages become visible in id
order, so paging with `after=<last id seen>` never skips one, whatever arrives
meanwhile. Ids of other users' messages are ignored (answered as `unknown`,
so nobody learns whether they exist).
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Sequence
from typing import Annotated, ClassVar, Protocol

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import invalid, read_body, reply
from sipwake.api.schema import UNAUTHORIZED, Json, error, query, request, returns
from sipwake.messages.content import number_of
from sipwake.messages.encoding import decode
from sipwake.store.models import InboxMessage

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_AFTER = 2**63 - 1
MAX_ACK_IDS = 1000
MAX_ACK_BODY = 64 * 1024
MAX_DECODED = 16 * 1024 * 1024  # [messages] max_body bounded it when it was stored


class MessageStore(Protocol):
    async def messages(
        self, aor: str, after: int = 0, limit: int = 100
    ) -> list[InboxMessage]: ...

    async def ack_messages(self, aor: str, ids: Sequence[int], at: float) -> list[int]: ...


class InboxEvents(Protocol):
    def messages_delivered(self, aor: str) -> None:
        """Some of `aor`'s messages were acknowledged: they may make room."""
        ...


class Message(msgspec.Struct):
    """One message; the body is byte-exact, as `body` or `body_base64` (a SIP
    Content-Encoding such as gzip undone)."""

    schema_extra: ClassVar[Json] = {
        "oneOf": [{"required": ["body"]}, {"required": ["body_base64"]}]
    }

    id: Annotated[int, Meta(ge=1, description="grows in arrival order, never reused")]
    from_uri: str
    from_number: Annotated[str, Meta(
        description="number or user part of `from_uri`; empty when it does not parse")]
    from_name: str
    content_type: Annotated[str, Meta(description="the SIP Content-Type as received")]
    imdn_message_id: Annotated[str, Meta(
        description="RFC 5438 Message-ID from the CPIM envelope; empty when none")]
    received_at: Annotated[float, Meta(description="unix seconds")]
    delivered: Annotated[bool, Meta(
        description="a device answered it over SIP, or it was acked")]
    acked: Annotated[bool, Meta(description="acknowledged over HTTP")]
    body: Annotated[str | UnsetType, Meta(
        description="the body, when it is UTF-8 text")] = UNSET
    body_base64: Annotated[str | UnsetType, Meta(
        description="the body, when it is not UTF-8",
        extra_json_schema={"contentEncoding": "base64"})] = UNSET


class MessagePage(msgspec.Struct):
    messages: list[Message]
    next_after: Annotated[int, Meta(
        description="`after` for the next page: the last id here, or `after` when none")]
    more: Annotated[bool, Meta(description="more messages follow this page")]


class AckInput(msgspec.Struct):
    ids: Annotated[list[Annotated[int, Meta(ge=1)]], Meta(max_length=MAX_ACK_IDS)]


class AckResult(msgspec.Struct):
    acked: Annotated[list[int], Meta(
        description="the caller's messages among `ids` (acked now or before), ascending")]
    unknown: Annotated[list[int], Meta(
        description="the other ids, ascending, without duplicates")]


BODIES = (Message, MessagePage, AckInput, AckResult)


def message_view(m: InboxMessage) -> Message:
    """One message for the app. The body is byte-exact (its SIP Content-Encoding, if
    any, undone): `body` when it is UTF-8 text, else `body_base64`."""
    out = Message(
        id=m.id,
        from_uri=m.from_uri,
        from_number=number_of(m.from_uri),
        from_name=m.from_name,
        content_type=m.content_type,
        imdn_message_id=m.imdn_id,
        received_at=m.received_at,
        delivered=m.delivered_at > 0,
        acked=m.acked_at > 0,
    )
    body = m.body
    if m.content_encoding:  # a SIP transfer detail (gzip, deflate): the app gets the content
        with contextlib.suppress(ValueError):  # checked when it came: can't fail
            body = decode(m.content_encoding, body, MAX_DECODED)
    try:
        out.body = body.decode("utf-8")
    except UnicodeDecodeError:
        out.body_base64 = base64.b64encode(body).decode("ascii")
    return out


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 18 or not low <= int(text) <= high:
        raise invalid(name, f"must be an integer from {low} to {high}")
    return int(text)


def openapi_paths() -> Json:
    return {
        "/v1/messages": {"get": {
            "summary": "The caller's messages (inbox), oldest first",
            "description": "Messages with an id above `after`. Ids only grow and a user's "
                           "messages become visible in id order, so paging with "
                           "`after=next_after` never skips one.",
            "parameters": [
                query("after", {"type": "integer", "minimum": 0, "maximum": MAX_AFTER,
                                "default": 0}, "the last id already seen"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                "default": DEFAULT_LIMIT}),
            ],
            "responses": {"200": returns(MessagePage, "a page of messages"),
                          "401": UNAUTHORIZED,
                          "422": error("bad `after` or `limit`; `field` names it")},
        }},
        "/v1/messages/ack": {"post": {
            "summary": "Mark messages read: delivered, and no longer sent over SIP",
            "description": "Ids that are not the caller's messages are ignored and "
                           "answered as `unknown`, whether they exist or not.",
            "requestBody": request(AckInput),
            "responses": {
                "200": returns(AckResult, "acknowledged"),
                "400": error("not JSON, or not an object"),
                "401": UNAUTHORIZED,
                "413": error(f"body over {MAX_ACK_BODY} bytes"),
                "422": error(f"`ids` missing, not a list of positive integers, or over "
                             f"{MAX_ACK_IDS} ids"),
            },
        }},
    }  # fmt: skip


def add_routes(
    app: web.Application, auth: ApiAuth, store: MessageStore, inbox: InboxEvents
) -> None:
    async def list_messages(request: web.Request) -> web.Response:
        user = await auth.user(request)
        after = _int_param(request, "after", 0, 0, MAX_AFTER)
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        rows = await store.messages(user.aor, after, limit + 1)
        page = rows[:limit]
        return reply(MessagePage(
            messages=[message_view(m) for m in page],
            next_after=page[-1].id if page else after,  # the `after` of the next page
            more=len(rows) > limit,
        ))  # fmt: skip

    async def ack(request: web.Request) -> web.Response:
        user = await auth.user(request)
        ids = (await read_body(request, AckInput, MAX_ACK_BODY)).ids
        mine = set(await store.ack_messages(user.aor, ids, time.time()))
        if mine:
            inbox.messages_delivered(user.aor)
        unknown = sorted({i for i in ids if i not in mine})
        return reply(AckResult(acked=sorted(mine), unknown=unknown))

    app.router.add_get("/v1/messages", list_messages)
    app.router.add_post("/v1/messages/ack", ack)
