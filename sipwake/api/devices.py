"""Device API: an app uploads its push tokens and preferences over HTTP.

    PUT    /v1/devices/{device_id}   create or replace one of the caller's devices
    GET    /v1/devices/{device_id}   read it back (tokens included: it is the owner)
    DELETE /v1/devices/{device_id}   stop pushes to it
    GET    /v1/devices               the caller's devices

The records are the same `Device`s the registrar writes from RFC 8599 REGISTER
parameters. Give `instance` (the app's +sip.instance) and a later REGISTER from the
same installation updates this device instead of adding a second one; a REGISTER
first and a PUT later meet under the registrar's id (listed by `GET /v1/devices`).

Device ids are global: one that belongs to someone else is 404 to read or delete
(its existence is not revealed) and 403 to overwrite.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Literal, Protocol

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error, convert, invalid, read_json_object, reply, text, view
from sipwake.api.schema import UNAUTHORIZED, Json, error, request, returns
from sipwake.push.tokens import apns_token_problem, fcm_token_problem
from sipwake.store import models

MAX_BODY = 16 * 1024  # an FCM token is at most 4 KiB; the rest is small
DEVICE_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
PROVIDERS = {"ios": "apns", "android": "fcm"}


class DeviceStore(Protocol):
    async def get_device(self, device_id: str) -> models.Device | None: ...

    async def devices(self, aor: str) -> list[models.Device]: ...


class DeviceRegistry(Protocol):
    """The registrar, owner of the device cache: writes go through it."""

    async def save_device(self, device: models.Device) -> None: ...

    async def delete_device(self, device_id: str) -> bool: ...


class DeviceInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A PUT body: the device's push tokens and preferences."""

    platform: Annotated[Literal["ios", "android"], Meta(
        description="`ios` (pushed through APNs) or `android` (FCM).")]
    push_token: Annotated[str, text(
        "iOS: APNs alert token (hex). Android: FCM registration token. Required on Android.",
        max_length=4096)] = ""
    voip_token: Annotated[str, text(
        "iOS only: PushKit (VoIP) token (hex). iOS needs push_token, voip_token or both.",
        max_length=400)] = ""
    topic: Annotated[str, text(
        "iOS: the app's bundle id (without `.voip`). Android: the Firebase project id.",
        max_length=255, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*")] = ""
    sandbox: Annotated[bool, Meta(
        description="iOS: the token is for the APNs development environment.")] = False
    call_mode: Annotated[Literal["voip", "alert"] | UnsetType, Meta(
        description="iOS: `voip` (PushKit push, CallKit rings; needs voip_token) or `alert` "
                    "(a ringing notification). Default: `voip` when a voip_token is given, "
                    "else `alert`.")] = UNSET
    ringtone: Annotated[str, text(
        "Sound file in the app bundle played by alert-mode call pushes.",
        max_length=255, pattern=r"[^/\\\x00-\x1f\x7f]+")] = ""
    locale: Annotated[str, text(
        "BCP 47 language tag, e.g. `en-US`.",
        max_length=35, pattern=r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")] = ""
    privacy: Annotated[bool, Meta(
        description="Pushes carry no names or message text, only ids.")] = False
    instance: Annotated[str, text(
        "The `+sip.instance` the app registers with (e.g. `urn:uuid:…`), so its RFC 8599 "
        "REGISTERs update this device.", max_length=255, pattern=r"[\x21-\x7e]+")] = ""


FIELDS = DeviceInput.__struct_fields__
Unix = Annotated[float, Meta(description="unix seconds")]


class Device(msgspec.Struct):
    """A device as its owner sees it (tokens included)."""

    device_id: str
    platform: Annotated[str, Meta(extra_json_schema={"enum": ["ios", "android"]})]
    provider: Annotated[str, Meta(extra_json_schema={"enum": ["apns", "fcm"]})]
    push_token: str
    voip_token: str
    topic: str
    sandbox: bool
    call_mode: str
    ringtone: str
    locale: str
    privacy: bool
    instance: str
    enabled: Annotated[bool, Meta(description="false once APNs/FCM rejected the token; "
                                              "uploading a new token enables it again")]
    disabled_reason: str
    token_updated_at: Unix
    created_at: Unix
    updated_at: Unix


class DeviceList(msgspec.Struct):
    devices: list[Device]


BODIES = (DeviceInput, Device, DeviceList)


def parse_device(body: dict[str, object]) -> DeviceInput:
    """Check a PUT body field by field; raises 422 naming the first field at fault.
    null is the same as leaving the field out: its default."""
    device = convert({k: v for k, v in body.items() if v is not None}, DeviceInput)
    _check_tokens(device)
    return device


def _check_tokens(d: DeviceInput) -> None:
    if d.platform == "ios":
        for name in ("push_token", "voip_token"):
            token = getattr(d, name)
            if token and (problem := apns_token_problem(token)):
                raise invalid(name, problem)
            setattr(d, name, token.lower())  # hex: one spelling, so one token is one device
        if not (d.push_token or d.voip_token):
            raise invalid("push_token", "iOS devices need push_token, voip_token or both")
        if d.call_mode is UNSET:
            d.call_mode = "voip" if d.voip_token else "alert"
        if d.call_mode == "voip" and not d.voip_token:
            raise invalid("call_mode", "voip call mode needs a voip_token")
    else:
        if d.voip_token:
            raise invalid("voip_token", "Android devices have no VoIP token")
        if not d.push_token:
            raise invalid("push_token", "Android devices need push_token")
        if problem := fcm_token_problem(d.push_token):
            raise invalid("push_token", problem)
        if d.call_mode is UNSET:
            d.call_mode = "alert"


def apply_input(old: models.Device | None, device_id: str, aor: str, d: DeviceInput,
                now: float) -> models.Device:
    """The device after a PUT: every client field replaced. A changed token counts as
    a new upload: it re-enables the device and moves token_updated_at, which the
    APNs 410 rule compares against. An unchanged token leaves `enabled` alone."""
    provider = PROVIDERS[d.platform]
    if old is None:
        device = models.Device(device_id, aor, provider, d.platform, token_updated_at=now,
                               created_at=now)
    else:
        device = replace(old)
        if (old.provider, old.push_token, old.voip_token) != (provider, d.push_token,
                                                              d.voip_token):
            device.token_updated_at = now
            device.enabled = True
            device.disabled_reason = ""
        if old.provider != provider:  # what a REGISTER said about the old platform
            device.team_id = device.pn_param = ""
    device.provider = provider
    device.platform = d.platform
    device.push_token = d.push_token
    device.voip_token = d.voip_token
    device.topic = d.topic
    device.sandbox = d.sandbox
    device.call_mode = d.call_mode if isinstance(d.call_mode, str) else ""  # set by now
    device.ringtone = d.ringtone
    device.locale = d.locale
    device.privacy = d.privacy
    device.instance = d.instance
    device.updated_at = now
    return device


class DeviceApi:
    def __init__(self, auth: ApiAuth, store: DeviceStore, registry: DeviceRegistry) -> None:
        self.auth = auth
        self.store = store
        self.registry = registry
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def _locked(self, device_id: str) -> AsyncIterator[None]:
        """Writes to one device id, one at a time (two users racing for a new id)."""
        lock, users = self._locks.get(device_id) or (asyncio.Lock(), 0)
        self._locks[device_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[device_id]
            if users == 1:
                del self._locks[device_id]
            else:
                self._locks[device_id] = (lock, users - 1)

    async def _own(self, request: web.Request, aor: str) -> models.Device:
        """The caller's device named in the path, or 404 (also when it is someone else's)."""
        device_id = _device_id(request)
        device = await self.store.get_device(device_id)
        if device is None or device.aor != aor:
            raise api_error(404, "not_found", "no such device", "device_id")
        return device

    async def list(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request, scope="devices")
        devices = await self.store.devices(user.aor)
        return reply(DeviceList([view(Device, d) for d in devices]))

    async def get(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request, scope="devices")
        return reply(view(Device, await self._own(request, user.aor)))

    async def delete(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request, scope="devices")
        device_id = _device_id(request)
        async with self._locked(device_id):
            device = await self._own(request, user.aor)
            await self.registry.delete_device(device.device_id)
        return web.Response(status=204)

    async def put(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request, scope="devices")
        device_id = _device_id(request)
        body = parse_device(await read_json_object(request, MAX_BODY))
        store = self.store
        async with self._locked(device_id):
            old = await store.get_device(device_id)
            if old is not None and old.aor != user.aor:
                raise api_error(403, "forbidden", "this device id is taken", "device_id")
            if body.instance:
                for other in await store.devices(user.aor):
                    if other.instance == body.instance and other.device_id != device_id:
                        raise api_error(409, "conflict",
                                        f"device {other.device_id} already has this instance",
                                        "instance", device_id=other.device_id)
            device = apply_input(old, device_id, user.aor, body, time.time())
            await self.registry.save_device(device)
        if old is None:
            return reply(view(Device, device), 201, {"Location": f"/v1/devices/{device_id}"})
        return reply(view(Device, device))


def _device_id(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if not DEVICE_ID.fullmatch(device_id):
        raise api_error(400, "bad_request", "device ids are 1-128 of A-Z a-z 0-9 . _ ~ -",
                        "device_id")
    return device_id


DEVICE_ID_PARAM: Json = {
    "name": "device_id", "in": "path", "required": True,
    "description": "Chosen by the app (or by the registrar for devices first seen in a "
                   "REGISTER). Global: an id that is someone else's is 404 to read and "
                   "403 to write.",
    "schema": {"type": "string", "pattern": f"^{DEVICE_ID.pattern}$"},
}  # fmt: skip


def openapi_paths() -> Json:
    return {
        "/v1/devices": {"get": {
            "summary": "The caller's devices",
            "responses": {"200": returns(DeviceList, "devices"), "401": UNAUTHORIZED},
        }},
        "/v1/devices/{device_id}": {
            "parameters": [DEVICE_ID_PARAM],
            "put": {
                "summary": "Create or replace a device (push tokens and preferences)",
                "description": "Fields left out (or null) take their defaults. A new token "
                               "re-enables a device its provider disabled.",
                "requestBody": request(DeviceInput),
                "responses": {
                    "200": returns(Device, "replaced"),
                    "201": returns(Device, "created"),
                    "400": error("not JSON, not an object, or a bad device id"),
                    "401": UNAUTHORIZED,
                    "403": error("the device id belongs to another user"),
                    "409": error("another device of the caller has this instance"),
                    "413": error(f"body over {MAX_BODY} bytes"),
                    "422": error("a field is missing, unknown, or invalid; `field` names it"),
                },
            },
            "get": {
                "summary": "One of the caller's devices",
                "responses": {"200": returns(Device, "the device"),
                              "400": error("bad device id"),
                              "401": UNAUTHORIZED,
                              "404": error("no such device of the caller")},
            },
            "delete": {
                "summary": "Remove a device: no more pushes to it",
                "responses": {"204": {"description": "deleted"},
                              "400": error("bad device id"),
                              "401": UNAUTHORIZED,
                              "404": error("no such device of the caller")},
            },
        },
    }  # fmt: skip


def add_routes(
    app: web.Application, auth: ApiAuth, store: DeviceStore, registry: DeviceRegistry
) -> None:
    api = DeviceApi(auth, store, registry)
    app.router.add_get("/v1/devices", api.list)
    app.router.add_put("/v1/devices/{device_id}", api.put)
    app.router.add_get("/v1/devices/{device_id}", api.get)
    app.router.add_delete("/v1/devices/{device_id}", api.delete)
