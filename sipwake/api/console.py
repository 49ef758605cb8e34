"""The operator's console: `GET /admin` (one static page and its script, served from
the package, no build step, nothing from elsewhere) and the JSON it polls, behind the
service token `[http] api_token` (DESIGN "Operations"): live registrations, push
devices (tokens masked), parked and ringing calls, recent pushes with the provider's
answer and latency, the inbox backlog, provider health, and each recent call's or
message's timeline (sipwake/timeline.py).

The page itself carries no data, so it is served to anyone; it reads the token from
its URL fragment (`/admin#token=…`, never sent to a server, so never logged) or asks
for it, and sends it as a Bearer header with every data request. Every list is
bounded (`limit`, at most MAX_LIMIT).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Protocol

import msgspec
from aiohttp import web
from msgspec import Meta

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error, reply
from sipwake.api.schema import SERVICE_AUTH, SERVICE_UNAUTHORIZED, Json, error, query, returns
from sipwake.store.models import Binding, Device

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
Value = str | int | float | bool

# the page's own files: name → content type
STATIC = {"admin.html": "text/html; charset=utf-8", "admin.js": "text/javascript; charset=utf-8",
          "admin.css": "text/css; charset=utf-8"}  # fmt: skip
PAGE_HEADERS = {
    # nothing but our own script and style, no frames, no referrer (the fragment is not
    # sent anyway, but the page's address is nobody's business)
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}  # fmt: skip
_PN_PRID = re.compile(r"(pn-prid=)([^;>?&]*)", re.IGNORECASE)


# ------------------------------------------------------------------ what it reads
class Registry(Protocol):
    """The registrar: bindings in memory, the device cache."""

    @property
    def bindings(self) -> Mapping[str, Sequence[Binding]]: ...

    @property
    def devices(self) -> Mapping[str, Device]: ...

    async def devices_of(self, aor: str) -> list[Device]: ...


class RingingCalls(Protocol):
    def ringing(self, limit: int) -> list[dict[str, Value]]: ...


class Backlog(Protocol):
    async def backlog(self, limit: int) -> list[tuple[str, int]]: ...


class ProviderHealth(Protocol):
    def provider_health(self) -> dict[str, dict[str, str | float | int]]: ...


class RecordedEvent(Protocol):
    @property
    def at(self) -> float: ...

    @property
    def event(self) -> str: ...

    @property
    def fields(self) -> Mapping[str, Value]: ...


class RecordedEntry(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def started(self) -> float: ...

    @property
    def updated(self) -> float: ...

    @property
    def dropped(self) -> int: ...

    @property
    def summary(self) -> Mapping[str, Value]: ...

    @property
    def events(self) -> Sequence[RecordedEvent]: ...


class Recorded(Protocol):
    """The timeline (sipwake.timeline.Timeline)."""

    def get(self, kind: str, key: str) -> RecordedEntry | None: ...

    def recent(self, kind: str, limit: int) -> Sequence[RecordedEntry]: ...


@dataclass(frozen=True, slots=True)
class ConsoleSources:
    registry: Registry
    calls: RingingCalls
    inbox: Backlog
    push: ProviderHealth
    timeline: Recorded


# ------------------------------------------------------------------ bodies
Fields = dict[str, Value]


class TimelineEvent(msgspec.Struct):
    at: Annotated[float, Meta(description="unix seconds")]
    ms: Annotated[float, Meta(description="milliseconds since the entry's first event")]
    event: Annotated[str, Meta(examples=["invite in", "parked", "push", "register in",
                                         "invite out", "180", "200", "answered", "end",
                                         "stored", "delivered"])]
    fields: Annotated[Fields, Meta(description="what the event is about: device, provider, "
                                               "answer, status, ms, outcome…")]


class Timeline(msgspec.Struct):
    """One call (key: the park id, the push's `call_id`), message (its id) or push (its
    push id), step by step."""

    kind: Annotated[str, Meta(examples=["call", "message", "push", "register"])]
    key: str
    started_at: float
    updated_at: float
    summary: Annotated[Fields, Meta(description="the latest value of every field, and "
                                                "`last`: the latest event")]
    dropped: Annotated[int, Meta(description="events dropped from the middle to stay within "
                                              "the per-entry cap")]
    events: list[TimelineEvent]


class TimelineList(msgspec.Struct):
    items: list[Timeline]


class Registration(msgspec.Struct):
    user: str
    key: Annotated[str, Meta(description="+sip.instance, pn-prid (masked) or contact")]
    contact: Annotated[str, Meta(description="as registered, pn-prid masked")]
    received: str
    expires_in: int
    device_id: str
    user_agent: str


class PushDevice(msgspec.Struct):
    device_id: str
    user: str
    provider: str
    platform: str
    token: Annotated[str, Meta(description="masked: its first and last characters")]
    voip_token: str
    topic: str
    call_mode: str
    enabled: bool
    disabled_reason: str
    token_updated_at: float


class RingingCall(msgspec.Struct):
    call_id: str
    callee: str
    caller: str
    caller_name: str
    parked: Annotated[bool, Meta(description="no device rings yet: the caller hears our 180")]
    started_at: float
    deadline: float
    pushed: int
    branches: int


class RecentPush(msgspec.Struct):
    push_id: str
    at: float
    type: str
    device: str
    user: str
    provider: str
    answer: Annotated[str, Meta(examples=["delivered", "retry", "invalid_token", "failed",
                                          "expired", "skipped"])]
    status: int
    ms: Annotated[float, Meta(description="the last request's latency, milliseconds")]
    attempts: int
    reason: str


class RecentCall(msgspec.Struct):
    call_id: str
    started_at: float
    callee: str
    caller: str
    last: Annotated[str, Meta(description="the latest event")]
    state: str


class InboxBacklog(msgspec.Struct):
    user: str
    unread: Annotated[int, Meta(description="messages not delivered yet (the badge)")]


class ProviderStatus(msgspec.Struct):
    name: Annotated[str, Meta(examples=["apns", "fcm", "sink"])]
    delivered: int
    errors: int
    last_success_at: Annotated[float, Meta(description="unix seconds; 0: never")]
    last_error_at: float
    last_error: str
    token_age: Annotated[float | None, Meta(description="seconds since the JWT (APNs) or "
                                                        "OAuth token (FCM) in use was made")]
    auth_error: str = ""


class Overview(msgspec.Struct):
    """Everything the admin page shows, each list at most `limit` long."""

    now: float
    registered_users: int
    registrations: list[Registration]
    devices: list[PushDevice]
    calls: list[RingingCall]
    recent_calls: list[RecentCall]
    pushes: list[RecentPush]
    inbox: list[InboxBacklog]
    providers: list[ProviderStatus]


BODIES = (Overview, Timeline, TimelineList)


# ------------------------------------------------------------------ views
def mask(token: str) -> str:
    """Enough of a token to tell two apart, not enough to use one."""
    if not token:
        return ""
    if len(token) <= 12:
        return "…"
    return f"{token[:6]}…{token[-4:]}"


def _mask_contact(contact: str) -> str:
    return _PN_PRID.sub(lambda m: m.group(1) + mask(m.group(2)), contact)


def _mask_key(key: str) -> str:
    """A binding's key: an instance id is shown, a contact shown masked, a pn-prid
    (a push token) masked."""
    if key.startswith(("<urn:", "urn:")):
        return key
    if key.startswith(("sip:", "sips:", "<")):
        return _mask_contact(key)
    return mask(key)


def _timeline(entry: RecordedEntry) -> Timeline:
    return Timeline(
        entry.kind, entry.key, entry.started, entry.updated, dict(entry.summary),
        entry.dropped,
        [TimelineEvent(e.at, round((e.at - entry.started) * 1000.0, 1), e.event,
                       dict(e.fields)) for e in entry.events],
    )  # fmt: skip


def _text(fields: Mapping[str, Value], name: str) -> str:
    value = fields.get(name, "")
    return value if isinstance(value, str) else str(value)


def _number(fields: Mapping[str, Value], name: str) -> float:
    value = fields.get(name, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def _push(entry: RecordedEntry) -> RecentPush:
    s = entry.summary
    return RecentPush(
        entry.key, entry.updated, _text(s, "type"), _text(s, "device"), _text(s, "user"),
        _text(s, "provider"), _text(s, "answer"), int(_number(s, "status")),
        _number(s, "ms"), int(_number(s, "attempt")), _text(s, "reason"),
    )  # fmt: skip


def _call(entry: RecordedEntry) -> RecentCall:
    s = entry.summary
    return RecentCall(entry.key, entry.started, _text(s, "callee"), _text(s, "caller"),
                      _text(s, "last"), _text(s, "state") or "ringing")  # fmt: skip


def _registrations(registry: Registry, now: float, limit: int) -> list[Registration]:
    out: list[Registration] = []
    for aor, bindings in registry.bindings.items():
        for b in bindings:
            if b.expires_at <= now:
                continue
            out.append(Registration(
                aor, _mask_key(b.key), _mask_contact(b.contact), b.received,
                int(b.expires_at - now), b.device_id, b.user_agent,
            ))  # fmt: skip
            if len(out) >= limit:
                return out
    return out


def _device(d: Device) -> PushDevice:
    return PushDevice(d.device_id, d.aor, d.provider, d.platform, mask(d.push_token),
                      mask(d.voip_token), d.topic, d.call_mode, d.enabled, d.disabled_reason,
                      d.token_updated_at)  # fmt: skip


async def _devices(sources: ConsoleSources, aors: list[str], limit: int) -> list[PushDevice]:
    """Devices this node has seen (its cache), and those of the users on the page."""
    found: dict[str, Device] = {}
    for d in list(sources.registry.devices.values())[:limit]:
        found[d.device_id] = d
    for aor in aors:
        if len(found) >= limit:
            break
        for d in await sources.registry.devices_of(aor):
            found.setdefault(d.device_id, d)
    return [_device(d) for d in list(found.values())[:limit]]


def _providers(push: ProviderHealth, now: float) -> list[ProviderStatus]:
    out: list[ProviderStatus] = []
    for name, info in push.provider_health().items():
        issued = info.get("token_issued_at")
        age = now - float(issued) if isinstance(issued, int | float) and issued else None
        out.append(ProviderStatus(
            name, int(info.get("delivered", 0)), int(info.get("errors", 0)),
            float(info.get("last_success_at", 0.0)), float(info.get("last_error_at", 0.0)),
            str(info.get("last_error", "")), None if age is None else round(age, 1),
            str(info.get("auth_error", "")),
        ))  # fmt: skip
    return out


async def overview(sources: ConsoleSources, now: float, limit: int) -> Overview:
    registry = sources.registry
    timeline = sources.timeline
    registrations = _registrations(registry, now, limit)
    ringing = sources.calls.ringing(limit)
    calls = [RingingCall(
        str(c["call_id"]), str(c["callee"]), str(c["caller"]), str(c["caller_name"]),
        bool(c["parked"]), float(c["started_at"]), float(c["deadline"]), int(c["pushed"]),
        int(c["branches"]),
    ) for c in ringing]  # fmt: skip
    pushes = [_push(e) for e in timeline.recent("push", limit)]
    users = [*(r.user for r in registrations), *(c.callee for c in calls),
             *(p.user for p in pushes)]  # fmt: skip
    return Overview(
        now=now,
        registered_users=len(registry.bindings),
        registrations=registrations,
        devices=await _devices(sources, list(dict.fromkeys(u for u in users if u)), limit),
        calls=calls,
        recent_calls=[_call(e) for e in timeline.recent("call", limit)],
        pushes=pushes,
        inbox=[InboxBacklog(u, n) for u, n in await sources.inbox.backlog(limit)],
        providers=_providers(sources.push, now),
    )


# ------------------------------------------------------------------ the document
def openapi_paths() -> Json:
    limit = query("limit", {"type": "integer", "default": DEFAULT_LIMIT},
                  f"entries per list; values outside 1-{MAX_LIMIT} are clamped to it")

    def one(kind: str, name: str) -> Json:
        return {"get": {
            "summary": f"One recent {kind}'s timeline",
            "security": SERVICE_AUTH,
            "parameters": [{"name": name, "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": returns(Timeline, "its events, oldest first"),
                          "401": SERVICE_UNAUTHORIZED,
                          "404": error(f"no such {kind} among the recent ones")},
        }}  # fmt: skip

    return {
        "/v1/admin/overview": {"get": {
            "summary": "What the admin page shows (service token)",
            "security": SERVICE_AUTH,
            "parameters": [limit],
            "responses": {"200": returns(Overview, "the node now"),
                          "400": error("`limit` is not an integer"),
                          "401": SERVICE_UNAUTHORIZED},
        }},
        "/v1/admin/timeline": {"get": {
            "summary": "Recent timelines of one kind, newest first (service token)",
            "security": SERVICE_AUTH,
            "parameters": [query("kind", {"enum": ["call", "message", "push", "register"],
                                          "default": "call"}), limit],
            "responses": {"200": returns(TimelineList, "timelines"),
                          "400": error("bad `kind` or `limit`"),
                          "401": SERVICE_UNAUTHORIZED},
        }},
        "/v1/admin/calls/{call_id}": one("call", "call_id"),
        "/v1/admin/messages/{message_id}": one("message", "message_id"),
    }  # fmt: skip


# ------------------------------------------------------------------ routes
def _limit(request: web.Request) -> int:
    try:
        limit = int(request.query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise api_error(400, "invalid", "must be an integer", "limit") from None
    return min(max(limit, 1), MAX_LIMIT)


def _static(name: str) -> bytes:
    return resources.files("sipwake.api").joinpath("static", name).read_bytes()


def add_routes(
    app: web.Application,
    auth: ApiAuth,
    sources: ConsoleSources,
    clock: Callable[[], float] = time.time,
) -> None:
    files = {name: _static(name) for name in STATIC}

    async def page(request: web.Request) -> web.Response:
        name = request.match_info.get("name", "admin.html")
        if name not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[name], content_type=STATIC[name].split(";")[0],
                            charset="utf-8", headers=PAGE_HEADERS)  # fmt: skip

    async def get_overview(request: web.Request) -> web.Response:
        auth.service(request)
        return reply(await overview(sources, clock(), _limit(request)))

    async def get_timeline(request: web.Request) -> web.Response:
        auth.service(request)
        kind = request.query.get("kind", "call")
        if kind not in ("call", "message", "push", "register"):
            raise api_error(400, "invalid", "call, message, push or register", "kind")
        entries = sources.timeline.recent(kind, _limit(request))
        return reply(TimelineList([_timeline(e) for e in entries]))

    def one(kind: str, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def get_one(request: web.Request) -> web.Response:
            auth.service(request)
            entry = sources.timeline.get(kind, request.match_info[name])
            if entry is None:
                raise api_error(404, "not found", f"no such {kind} among the recent ones",
                                name)  # fmt: skip
            return reply(_timeline(entry))

        return get_one

    app.router.add_get("/admin", page)
    app.router.add_get("/admin/{name}", page)
    app.router.add_get("/v1/admin/overview", get_overview)
    app.router.add_get("/v1/admin/timeline", get_timeline)
    app.router.add_get("/v1/admin/calls/{call_id}", one("call", "call_id"))
    app.router.add_get("/v1/admin/messages/{message_id}", one("message", "message_id"))
