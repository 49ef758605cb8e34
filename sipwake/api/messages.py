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
from typing import Any, Protocol

from aiohttp import web

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import invalid, read_json_object
from sipwake.messages.content import number_of
from sipwake.messages.encoding import decode
from sipwake.store.models import InboxMessage

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
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


def message_json(m: InboxMessage) -> dict[str, Any]:
    """One message for the app. The body is byte-exact (its SIP Content-Encoding, if
    any, undone): `body` when it is UTF-8 text, else `body_base64`."""
    out: dict[str, Any] = {
        "id": m.id,
        "from_uri": m.from_uri,
        "from_number": number_of(m.from_uri),
        "from_name": m.from_name,
        "content_type": m.content_type,
        "imdn_message_id": m.imdn_id,
        "received_at": m.received_at,
        "delivered": m.delivered_at > 0,
        "acked": m.acked_at > 0,
    }
    body = m.body
    if m.content_encoding:  # a SIP transfer detail (gzip, deflate): the app gets the content
        with contextlib.suppress(ValueError):  # checked when it came: can't fail
            body = decode(m.content_encoding, body, MAX_DECODED)
    try:
        out["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(body).decode("ascii")
    return out


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 18 or not low <= int(text) <= high:
        raise invalid(name, f"must be an integer from {low} to {high}")
    return int(text)


def add_routes(
    app: web.Application, auth: ApiAuth, store: MessageStore, inbox: InboxEvents
) -> None:
    async def list_messages(request: web.Request) -> web.Response:
        user = await auth.user(request)
        after = _int_param(request, "after", 0, 0, 2**63 - 1)
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        rows = await store.messages(user.aor, after, limit + 1)
        page = rows[:limit]
        return web.json_response({
            "messages": [message_json(m) for m in page],
            "next_after": page[-1].id if page else after,  # the `after` of the next page
            "more": len(rows) > limit,
        })  # fmt: skip

    async def ack(request: web.Request) -> web.Response:
        user = await auth.user(request)
        body = await read_json_object(request, MAX_ACK_BODY)
        ids = body.get("ids")
        if (
            not isinstance(ids, list)
            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)
        ):
            raise invalid("ids", "must be a list of message ids (positive integers)")
        if len(ids) > MAX_ACK_IDS:
            raise invalid("ids", f"at most {MAX_ACK_IDS} ids at a time")
        mine = set(await store.ack_messages(user.aor, ids, time.time()))
        if mine:
            inbox.messages_delivered(user.aor)
        unknown = sorted({i for i in ids if i not in mine})
        return web.json_response({"acked": sorted(mine), "unknown": unknown})

    app.router.add_get("/v1/messages", list_messages)
    app.router.add_post("/v1/messages/ack", ack)
