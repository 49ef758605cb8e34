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
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aiohttp import web

from sipwake.api.auth import ApiAuth
from sipwake.api.jsonapi import api_error, invalid, read_json_object
from sipwake.push.tokens import apns_token_problem, fcm_token_problem
from sipwake.store.models import Device

MAX_BODY = 16 * 1024  # an FCM token is at most 4 KiB; the rest is small
DEVICE_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
PROVIDERS = {"ios": "apns", "android": "fcm"}


class DeviceStore(Protocol):
    async def get_device(self, device_id: str) -> Device | None: ...

    async def devices(self, aor: str) -> list[Device]: ...

    async def delete_device(self, device_id: str) -> bool: ...


class DeviceRegistry(Protocol):
    """The registrar, owner of the device cache: writes go through it."""

    async def save_device(self, device: Device) -> None: ...

    def device_deleted(self, device_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Field:
    """One accepted body field. `pattern` is matched whole (and published, anchored,
    in the OpenAPI schema); the empty string always means "none"."""

    type: type
    description: str
    enum: tuple[str, ...] = ()
    max_length: int = 0
    pattern: str = ""


FIELDS: dict[str, Field] = {
    "platform": Field(str, "`ios` (pushed through APNs) or `android` (FCM).",
                      enum=("ios", "android")),
    "push_token": Field(str, "iOS: APNs alert token (hex). Android: FCM registration token. "
                             "Required on Android.", max_length=4096),
    "voip_token": Field(str, "iOS only: PushKit (VoIP) token (hex). iOS needs push_token, "
                             "voip_token or both.", max_length=400),
    "topic": Field(str, "iOS: the app's bundle id (without `.voip`). Android: the Firebase "
                        "project id.", max_length=255, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*"),
    "sandbox": Field(bool, "iOS: the token is for the APNs development environment."),
    "call_mode": Field(str, "iOS: `voip` (PushKit push, CallKit rings; needs voip_token) or "
                            "`alert` (a ringing notification). Default: `voip` when a "
                            "voip_token is given, else `alert`.", enum=("voip", "alert")),
    "ringtone": Field(str, "Sound file in the app bundle played by alert-mode call pushes.",
                      max_length=255, pattern=r"[^/\\\x00-\x1f\x7f]+"),
    "locale": Field(str, "BCP 47 language tag, e.g. `en-US`.", max_length=35,
                    pattern=r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*"),
    "privacy": Field(bool, "Pushes carry no names or message text, only ids."),
    "instance": Field(str, "The `+sip.instance` the app registers with (e.g. "
                           "`urn:uuid:…`), so its RFC 8599 REGISTERs update this device.",
                      max_length=255, pattern=r"[\x21-\x7e]+"),
}
REQUIRED = ("platform",)


@dataclass(slots=True)
class DeviceInput:
    """A validated PUT body."""

    platform: str
    push_token: str = ""
    voip_token: str = ""
    topic: str = ""
    sandbox: bool = False
    call_mode: str = ""
    ringtone: str = ""
    locale: str = ""
    privacy: bool = False
    instance: str = ""


def parse_device(body: dict[str, Any]) -> DeviceInput:
    """Check a PUT body field by field; raises 422 naming the first field at fault."""
    for name in body:
        if name not in FIELDS:
            raise invalid(name, f"unknown field (accepted: {', '.join(FIELDS)})")
    values: dict[str, Any] = {}
    for name, spec in FIELDS.items():
        value = body.get(name)
        if value is None:  # absent, or null: the default
            if name in REQUIRED:
                raise invalid(name, "required")
            continue
        values[name] = _check(name, spec, value)
    device = DeviceInput(**values)
    _check_tokens(device)
    return device


def _check(name: str, spec: Field, value: Any) -> Any:
    if spec.type is bool:
        if not isinstance(value, bool):
            raise invalid(name, f"must be true or false, got {_json_type(value)}")
        return value
    if not isinstance(value, str):
        raise invalid(name, f"must be a string, got {_json_type(value)}")
    if spec.enum and value not in spec.enum:
        raise invalid(name, f"must be one of {', '.join(spec.enum)}, got {value[:40]!r}")
    if spec.max_length and len(value) > spec.max_length:
        raise invalid(name, f"longer than {spec.max_length} characters")
    if value and spec.pattern and not re.fullmatch(spec.pattern, value):
        raise invalid(name, f"does not match {spec.pattern}")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _check_tokens(d: DeviceInput) -> None:
    if d.platform == "ios":
        for name in ("push_token", "voip_token"):
            token = getattr(d, name)
            if token and (problem := apns_token_problem(token)):
                raise invalid(name, problem)
            setattr(d, name, token.lower())  # hex: one spelling, so one token is one device
        if not (d.push_token or d.voip_token):
            raise invalid("push_token", "iOS devices need push_token, voip_token or both")
        if not d.call_mode:
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
        d.call_mode = d.call_mode or "alert"


def device_json(d: Device) -> dict[str, Any]:
    """A device as its owner sees it."""
    return {
        "device_id": d.device_id,
        "platform": d.platform,
        "provider": d.provider,
        "push_token": d.push_token,
        "voip_token": d.voip_token,
        "topic": d.topic,
        "sandbox": d.sandbox,
        "call_mode": d.call_mode,
        "ringtone": d.ringtone,
        "locale": d.locale,
        "privacy": d.privacy,
        "instance": d.instance,
        "enabled": d.enabled,
        "disabled_reason": d.disabled_reason,
        "token_updated_at": d.token_updated_at,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    }


def apply_input(old: Device | None, device_id: str, aor: str, d: DeviceInput,
                now: float) -> Device:
    """The device after a PUT: every client field replaced. A changed token counts as
    a new upload: it re-enables the device and moves token_updated_at, which the
    APNs 410 rule compares against. An unchanged token leaves `enabled` alone."""
    provider = PROVIDERS[d.platform]
    if old is None:
        device = Device(device_id, aor, provider, d.platform, token_updated_at=now,
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
    device.call_mode = d.call_mode
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

    async def _own(self, request: web.Request, aor: str) -> Device:
        """The caller's device named in the path, or 404 (also when it is someone else's)."""
        device_id = _device_id(request)
        device = await self.store.get_device(device_id)
        if device is None or device.aor != aor:
            raise api_error(404, "not_found", "no such device", "device_id")
        return device

    async def list(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request, scope="devices")
        devices = await self.store.devices(user.aor)
        return web.json_response({"devices": [device_json(d) for d in devices]})

    async def get(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request, scope="devices")
        return web.json_response(device_json(await self._own(request, user.aor)))

    async def delete(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request, scope="devices")
        device_id = _device_id(request)
        async with self._locked(device_id):
            device = await self._own(request, user.aor)
            await self.store.delete_device(device.device_id)
            self.registry.device_deleted(device.device_id)
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
            return web.json_response(device_json(device), status=201,
                                     headers={"Location": f"/v1/devices/{device_id}"})
        return web.json_response(device_json(device))


def _device_id(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if not DEVICE_ID.fullmatch(device_id):
        raise api_error(400, "bad_request", "device ids are 1-128 of A-Z a-z 0-9 . _ ~ -",
                        "device_id")
    return device_id


def add_routes(
    app: web.Application, auth: ApiAuth, store: DeviceStore, registry: DeviceRegistry
) -> None:
    api = DeviceApi(auth, store, registry)
    app.router.add_get("/v1/devices", api.list)
    app.router.add_put("/v1/devices/{device_id}", api.put)
    app.router.add_get("/v1/devices/{device_id}", api.get)
    app.router.add_delete("/v1/devices/{device_id}", api.delete)
