"""`GET /v1/openapi.json`: the OpenAPI 3.1 description of the app-facing HTTP API.

Hand-written, except the device body, which comes from the same field table the
PUT handler validates with (api/devices.py), so the two cannot drift apart; likewise
the voicemail webhook body's fields and limits (api/voicemail.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sipwake.api import messages as messages_api
from sipwake.api import voicemail as voicemail_api
from sipwake.api.auth import SCOPES
from sipwake.api.dev import MAX_LIMIT
from sipwake.api.devices import DEVICE_ID, FIELDS, MAX_BODY, REQUIRED, Field
from sipwake.config import AuthConfig
from sipwake.voicemail.summary import MAX_COUNT

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


def _message_schema() -> Json:
    text = ("from_uri", "from_number", "from_name", "content_type", "imdn_message_id")
    props: Json = {"id": {"type": "integer", "minimum": 1,
                          "description": "grows in arrival order, never reused"}}
    props.update({name: {"type": "string"} for name in text})
    props["from_number"]["description"] = (
        "number or user part of `from_uri`; empty when it does not parse"
    )
    props["content_type"]["description"] = "the SIP Content-Type as received"
    props["imdn_message_id"]["description"] = "RFC 5438 Message-ID from the CPIM " \
                                              "envelope; empty when none"
    props["received_at"] = {"type": "number", "description": "unix seconds"}
    props["delivered"] = {"type": "boolean",
                          "description": "a device answered it over SIP, or it was acked"}
    props["acked"] = {"type": "boolean", "description": "acknowledged over HTTP"}
    required = list(props)
    props["body"] = {"type": "string", "description": "the body, when it is UTF-8 text"}
    props["body_base64"] = {"type": "string", "contentEncoding": "base64",
                            "description": "the body, when it is not UTF-8"}
    return {
        "type": "object",
        "description": "One message; the body is byte-exact, as `body` or `body_base64` "
                       "(a SIP Content-Encoding such as gzip undone).",
        "properties": props,
        "required": required,
        "oneOf": [{"required": ["body"]}, {"required": ["body_base64"]}],
    }


def _voicemail_input() -> Json:
    texts = {
        "user": "user name, or `sip:user@domain` (only the user part counts: users are "
                "looked up in `[sip] domain`)",
        "caller_uri": "who left the voicemail",
        "caller_name": "their display name",
        "account": "Message-Account URI devices are told (e.g. `sip:alice@vm.example.com`); "
                   "empty or left out keeps the stored one",
    }
    counts = {
        "new": "new voice messages: the mailbox's total now, not an increment",
        "old": "old voice messages: the mailbox's total now",
        "urgent_new": "urgent ones among the new",
        "urgent_old": "urgent ones among the old",
        "duration": "length of the voicemail just left, in seconds",
    }
    props: Json = {
        name: {"type": "string", "maxLength": max_length, "pattern": NO_CONTROL_CHARS,
               "description": texts.get(name, "")}
        for name, max_length in voicemail_api.MAX_TEXT.items()
    }
    props.update({
        name: {"type": "integer", "minimum": 0, "maximum": MAX_COUNT, "default": 0,
               "description": counts.get(name, "")}
        for name in voicemail_api.COUNTS
    })  # fmt: skip
    props["waiting"] = {"type": ["boolean", "null"],
                        "description": "Messages-Waiting; left out or null: `new` > 0"}
    return {
        "type": "object",
        "description": "Counts are totals after the event: the same report sent twice "
                       "changes nothing and pushes once. Strings are trimmed.",
        "additionalProperties": False,
        "required": list(voicemail_api.REQUIRED),
        "properties": props,
    }


UNAUTHORIZED = {
    "description": "No or bad credentials. `WWW-Authenticate` offers Digest (MD5, "
                   "SHA-256), Basic and Bearer.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": _ref("AuthError")}},
}
SERVICE_UNAUTHORIZED = _json(
    _ref("AuthError"),
    "No or wrong service token (always, while `[http] api_token` is not set). No "
    "`WWW-Authenticate`.",
)
USER_AUTH: list[Json] = [{"digestAuth": []}, {"basicAuth": []}, {"bearerAuth": []}]
SERVICE_AUTH: list[Json] = [{"serviceAuth": []}]
NO_CONTROL_CHARS = "^[^\\x00-\\x1f]*$"
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
            "description": "Push-token upload, inbox, call log and developer tools for "
                           "apps woken by sipwake. Authenticate as the SIP user: HTTP "
                           "Digest or Basic with the SIP credentials, or a bearer token "
                           "from POST /v1/tokens. The voicemail webhook takes the service "
                           "token `[http] api_token` instead.",
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
                "description": "Valid `[auth] token_ttl` seconds (24 h by default), until "
                               "the password changes, or until revoked. Scope `devices` "
                               "can only manage push devices.",
                "security": [{"digestAuth": []}, {"basicAuth": []}],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": False,
                               "properties": {"scope": {"type": "string",
                                                        "enum": list(SCOPES)}}}}}},
                "responses": {"200": _json(_ref("Token"), "a new token"),
                              "401": UNAUTHORIZED,
                              "403": _error("too many failed attempts from this address "
                                            "(Retry-After)"),
                              "422": _error("unknown field or scope")},
            }},
            "/v1/tokens/current": {"delete": {
                "summary": "Revoke the bearer token sent with this request",
                "security": [{"bearerAuth": []}],
                "responses": {"204": {"description": "revoked"}, "401": UNAUTHORIZED},
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
            "/v1/messages": {"get": {
                "summary": "The caller's messages (inbox), oldest first",
                "description": "Messages with an id above `after`. Ids only grow and a "
                               "user's messages become visible in id order, so paging with "
                               "`after=next_after` never skips one.",
                "parameters": [
                    {"name": "after", "in": "query",
                     "description": "the last id already seen",
                     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1,
                                "default": 0}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1,
                                "maximum": messages_api.MAX_LIMIT,
                                "default": messages_api.DEFAULT_LIMIT}},
                ],
                "responses": {"200": _json(_ref("MessagePage"), "a page of messages"),
                              "401": UNAUTHORIZED,
                              "422": _error("bad `after` or `limit`; `field` names it")},
            }},
            "/v1/messages/ack": {"post": {
                "summary": "Mark messages read: delivered, and no longer sent over SIP",
                "description": "Ids that are not the caller's messages are ignored and "
                               "answered as `unknown`, whether they exist or not.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("AckInput")}}},
                "responses": {
                    "200": _json(_ref("AckResult"), "acknowledged"),
                    "400": _error("not JSON, or not an object"),
                    "401": UNAUTHORIZED,
                    "413": _error(f"body over {messages_api.MAX_ACK_BODY} bytes"),
                    "422": _error("`ids` missing, not a list of positive integers, or "
                                  f"over {messages_api.MAX_ACK_IDS} ids"),
                },
            }},
            "/v1/calls": {"get": {
                "summary": "The caller's call log, newest first",
                "parameters": [
                    {"name": "missed", "in": "query",
                     "description": "`1`, `true` or `yes`: missed calls only (cancelled "
                                    "or timed out); anything else: every call",
                     "schema": {"type": "string", "default": "0", "examples": ["1"]}},
                    {"name": "limit", "in": "query",
                     "description": "an integer; values outside 1-1000 are clamped to it",
                     "schema": {"type": "integer", "default": 100}},
                ],
                "responses": {
                    "200": _json(_ref("CallList"), "calls"),
                    "400": _json({
                        "type": "object", "required": ["error", "field"],
                        "properties": {"error": {"const": "invalid"},
                                       "field": {"const": "limit"}},
                    }, "`limit` is not an integer"),
                    "401": UNAUTHORIZED,
                },
            }},
            "/v1/calls/{call_id}/decline": {"post": {
                "summary": "Decline a ringing call (the push's Decline action)",
                "description": "The caller gets 603 Decline, the callee's phones still "
                               "ringing get a CANCEL, and the devices that were pushed a "
                               "`call_cancelled` push.",
                "parameters": [{
                    "name": "call_id", "in": "path", "required": True,
                    "description": "the `call_id` of the call push",
                    "schema": {"type": "string"},
                }],
                "responses": {
                    "200": _json({
                        "type": "object", "required": ["status"],
                        "properties": {"status": {"const": "declined"}},
                    }, "declined"),
                    "401": UNAUTHORIZED,
                    "404": _json(_ref("CallError"),
                                 "no such call ringing for the caller (`call unknown`; "
                                 "also for someone else's call)"),
                    "410": _json(_ref("CallError"),
                                 "the call ended a short while ago: answered, "
                                 "cancelled, timed out or declined (`call gone`)"),
                },
            }},
            "/v1/voicemail": {"post": {
                "summary": "Voicemail webhook: a voicemail system reports a mailbox",
                "description": "For voicemail systems without SIP MWI. The state is "
                               "stored; when the new count rose, every enabled device of "
                               "the user gets a `voicemail` push; when what devices show "
                               "changed, the online ones get a NOTIFY.",
                "security": SERVICE_AUTH,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("VoicemailReport")}}},
                "responses": {
                    "200": _json(_ref("Mailbox"), "the stored state"),
                    "400": _error("not JSON, or not an object"),
                    "401": SERVICE_UNAUTHORIZED,
                    "404": _error("no such user (`field`: `user`)"),
                    "413": _error(f"body over {voicemail_api.MAX_BODY} bytes"),
                    "422": _error("a field is missing, unknown, or invalid; `field` "
                                  "names it"),
                },
            }},
        },
        "security": USER_AUTH,
        "components": {
            "securitySchemes": {
                "digestAuth": {"type": "http", "scheme": "digest"},
                "basicAuth": {"type": "http", "scheme": "basic"},
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "serviceAuth": {"type": "http", "scheme": "bearer",
                                "description": "`[http] api_token` from the configuration: "
                                               "for services (voicemail webhook), not users"},
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
                "AuthError": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"const": "unauthorized"},
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
                    "required": ["token", "token_type", "scope", "expires_in", "expires_at"],
                    "properties": {
                        "token": {"type": "string"},
                        "token_type": {"type": "string", "enum": ["Bearer"]},
                        "scope": {"type": "string", "enum": list(SCOPES)},
                        "expires_in": {"type": "integer",
                                       "examples": [AuthConfig().token_ttl]},
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
                "Message": _message_schema(),
                "MessagePage": {
                    "type": "object", "required": ["messages", "next_after", "more"],
                    "properties": {
                        "messages": {"type": "array", "items": _ref("Message")},
                        "next_after": {"type": "integer",
                                       "description": "`after` for the next page: the last "
                                                      "id here, or `after` when none"},
                        "more": {"type": "boolean",
                                 "description": "more messages follow this page"},
                    },
                },
                "AckInput": {
                    "type": "object", "required": ["ids"],
                    "properties": {"ids": {
                        "type": "array", "maxItems": messages_api.MAX_ACK_IDS,
                        "items": {"type": "integer", "minimum": 1},
                    }},
                },
                "AckResult": {
                    "type": "object", "required": ["acked", "unknown"],
                    "properties": {
                        "acked": {"type": "array", "items": {"type": "integer"},
                                  "description": "the caller's messages among `ids` "
                                                 "(acked now or before), ascending"},
                        "unknown": {"type": "array", "items": {"type": "integer"},
                                    "description": "the other ids, ascending, without "
                                                   "duplicates"},
                    },
                },
                "Call": {
                    "type": "object",
                    "required": ["call_id", "caller_uri", "caller_number", "caller_name",
                                 "at", "ended_at", "answered", "missed", "reason"],
                    "properties": {
                        "call_id": {"type": "string",
                                    "description": "as in the call push"},
                        "caller_uri": {"type": "string"},
                        "caller_number": {"type": "string"},
                        "caller_name": {"type": "string"},
                        "at": {"type": "integer", "description": "unix seconds, call start"},
                        "ended_at": {"type": "integer", "description": "unix seconds"},
                        "answered": {"type": "boolean"},
                        "missed": {"type": "boolean",
                                   "description": "cancelled by the caller or timed out"},
                        "reason": {"type": "string",
                                   "examples": ["answered", "cancelled", "timeout",
                                                "declined", "busy", "failed"]},
                    },
                },
                "CallList": {
                    "type": "object", "required": ["calls"],
                    "properties": {"calls": {"type": "array", "items": _ref("Call")}},
                },
                "CallError": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string",
                                             "enum": ["call unknown", "call gone"]}},
                },
                "VoicemailReport": _voicemail_input(),
                "Mailbox": {
                    "type": "object",
                    "required": ["user", "waiting", "new", "old", "urgent_new", "urgent_old",
                                 "pushed"],
                    "properties": {
                        "user": {"type": "string",
                                 "description": "the user's address of record, "
                                                "`sip:user@domain`"},
                        "waiting": {"type": "boolean"},
                        "new": {"type": "integer"},
                        "old": {"type": "integer"},
                        "urgent_new": {"type": "integer"},
                        "urgent_old": {"type": "integer"},
                        "pushed": {"type": "boolean",
                                   "description": "the new count rose: a `voicemail` push "
                                                  "is on its way to the user's devices"},
                    },
                },
            },
        },
    }


def add_routes(app: web.Application) -> None:
    document = spec()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/v1/openapi.json", openapi)
