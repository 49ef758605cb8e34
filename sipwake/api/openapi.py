"""`GET /v1/openapi.json`: the OpenAPI 3.1 description of the app-facing HTTP API.

Hand-written, except the device body, which comes from the same field table the
PUT handler validates with (api/devices.py), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from sipwake.api.auth import TOKEN_TTL
from sipwake.api.dev import MAX_LIMIT
from sipwake.api.devices import DEVICE_ID, FIELDS, MAX_BODY, REQUIRED, Field

if TYPE_CHECKING:
    from sipwake.server import Server

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Json:
    return _json(_ref("Error"), description)


def _field_schema(spec: Field) -> Json:
    schema: Json = {"type": "boolean" if spec.type is bool else "string",
                    "description": spec.description}
    if spec.enum:
        schema["enum"] = list(spec.enum)
    if spec.max_length:
        schema["maxLength"] = spec.max_length
    if spec.pattern:
        schema["pattern"] = f"^(?:{spec.pattern})?$"  # "" means none
    return schema


def _device_schema() -> Json:
    props: Json = {
        "device_id": {"type": "string"},
        "platform": {"type": "string", "enum": ["ios", "android"]},
        "provider": {"type": "string", "enum": ["apns", "fcm"]},
    }
    for name in ("push_token", "voip_token", "topic", "call_mode", "ringtone", "locale",
                 "instance", "disabled_reason"):
        props[name] = {"type": "string"}
    for name in ("sandbox", "privacy", "enabled"):
        props[name] = {"type": "boolean"}
    for name in ("token_updated_at", "created_at", "updated_at"):
        props[name] = {"type": "number", "description": "unix seconds"}
    props["enabled"]["description"] = (
        "false once APNs/FCM rejected the token; uploading a new token enables it again"
    )
    return {"type": "object", "properties": props, "required": list(props)}


UNAUTHORIZED = {
    "description": "No or bad credentials. `WWW-Authenticate` offers Digest (MD5, "
                   "SHA-256), Basic and Bearer.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": _ref("Error")}},
}
USER_AUTH: list[Json] = [{"digestAuth": []}, {"basicAuth": []}, {"bearerAuth": []}]
DEVICE_ID_PARAM = {
    "name": "device_id", "in": "path", "required": True,
    "description": "Chosen by the app (or by the registrar for devices first seen in a "
                   "REGISTER). Global: an id that is someone else's is 404 to read and "
                   "403 to write.",
    "schema": {"type": "string", "pattern": f"^{DEVICE_ID.pattern}$"},
}


def spec() -> Json:
    device_input: Json = {
        "type": "object",
        "additionalProperties": False,
        "required": list(REQUIRED),
        "properties": {name: _field_schema(f) for name, f in FIELDS.items()},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sipwake",
            "version": "1",
            "description": "Push-token upload and developer tools for apps woken by "
                           "sipwake. Authenticate as the SIP user: HTTP Digest or Basic "
                           "with the SIP credentials, or a bearer token from POST /v1/tokens.",
        },
        "paths": {
            "/healthz": {"get": {
                "summary": "Liveness and store reachability",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "up"),
                    "503": _json({"type": "object"}, "store unavailable"),
                },
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            }},
            "/v1/tokens": {"post": {
                "summary": "Bearer token for the SIP user (send SIP credentials, not a token)",
                "security": [{"digestAuth": []}, {"basicAuth": []}],
                "responses": {"200": _json(_ref("Token"), "a new token"),
                              "401": UNAUTHORIZED},
            }},
            "/v1/devices": {"get": {
                "summary": "The caller's devices",
                "responses": {"200": _json(_ref("DeviceList"), "devices"),
                              "401": UNAUTHORIZED},
            }},
            "/v1/devices/{device_id}": {
                "parameters": [DEVICE_ID_PARAM],
                "put": {
                    "summary": "Create or replace a device (push tokens and preferences)",
                    "description": "Fields left out take their defaults. A new token "
                                   "re-enables a device its provider disabled.",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("DeviceInput")}}},
                    "responses": {
                        "200": _json(_ref("Device"), "replaced"),
                        "201": _json(_ref("Device"), "created"),
                        "400": _error("not JSON, not an object, or a bad device id"),
                        "401": UNAUTHORIZED,
                        "403": _error("the device id belongs to another user"),
                        "409": _error("another device of the caller has this instance"),
                        "413": _error(f"body over {MAX_BODY} bytes"),
                        "422": _error("a field is missing, unknown, or invalid; `field` "
                                      "names it"),
                    },
                },
                "get": {
                    "summary": "One of the caller's devices",
                    "responses": {"200": _json(_ref("Device"), "the device"),
                                  "400": _error("bad device id"),
                                  "401": UNAUTHORIZED,
                                  "404": _error("no such device of the caller")},
                },
                "delete": {
                    "summary": "Remove a device: no more pushes to it",
                    "responses": {"204": {"description": "deleted"},
                                  "400": _error("bad device id"),
                                  "401": UNAUTHORIZED,
                                  "404": _error("no such device of the caller")},
                },
            },
            "/v1/dev/pushes": {"get": {
                "summary": "Pushes the caller's devices would have received (no provider "
                           "configured)",
                "parameters": [
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                "default": 50}},
                    {"name": "device_id", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_ref("PushList"), "newest first"),
                              "400": _error("bad limit"),
                              "401": UNAUTHORIZED,
                              "404": _error("a push provider is configured: no sink")},
            }},
        },
        "security": USER_AUTH,
        "components": {
            "securitySchemes": {
                "digestAuth": {"type": "http", "scheme": "digest"},
                "basicAuth": {"type": "http", "scheme": "basic"},
                "bearerAuth": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "field", "detail"],
                    "properties": {
                        "error": {"type": "string"},
                        "field": {"type": ["string", "null"],
                                  "description": "the body field or parameter at fault"},
                        "detail": {"type": "string"},
                    },
                },
                "DeviceInput": device_input,
                "Device": _device_schema(),
                "DeviceList": {
                    "type": "object", "required": ["devices"],
                    "properties": {"devices": {"type": "array", "items": _ref("Device")}},
                },
                "Token": {
                    "type": "object",
                    "required": ["token", "token_type", "expires_in", "expires_at"],
                    "properties": {
                        "token": {"type": "string"},
                        "token_type": {"type": "string", "enum": ["Bearer"]},
                        "expires_in": {"type": "integer", "examples": [TOKEN_TTL]},
                        "expires_at": {"type": "integer", "description": "unix seconds"},
                    },
                },
                "Push": {
                    "type": "object",
                    "properties": {
                        "provider": {"type": "string", "enum": ["apns", "fcm"]},
                        "device_id": {"type": "string"},
                        "type": {"type": "string", "enum": [
                            "call", "call_cancelled", "missed_call", "message", "voicemail"]},
                        "push_id": {"type": "string"},
                        "sandbox": {"type": "boolean"},
                        "headers": {"type": "object",
                                    "additionalProperties": {"type": "string"}},
                        "payload": {"type": "object",
                                    "description": "APNs payload, or FCM message"},
                        "at": {"type": "number"},
                        "size": {"type": "integer", "description": "body bytes"},
                    },
                },
                "PushList": {
                    "type": "object", "required": ["pushes"],
                    "properties": {"pushes": {"type": "array", "items": _ref("Push")}},
                },
            },
        },
    }


def add_routes(app: web.Application, server: Server) -> None:
    document = spec()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/v1/openapi.json", openapi)
