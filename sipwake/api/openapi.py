"""`GET /v1/openapi.json`: the OpenAPI 3.1 description of the app-facing HTTP API.

Each resource module describes its own paths (`openapi_paths`) next to its handlers,
and its bodies are the msgspec Structs those handlers validate and reply with
(`BODIES`), whose JSON Schemas are generated here: a body is declared once, so the
document and the code cannot drift apart.
"""

from __future__ import annotations

from aiohttp import web

from sipwake.api import calls, console, dev, devices, messages, tokens, voicemail
from sipwake.api.jsonapi import Error
from sipwake.api.schema import USER_AUTH, Json, components, returns

RESOURCES = (tokens, devices, dev, messages, calls, voicemail, console)

INFO: Json = {
    "title": "sipwake",
    "version": "1",
    "description": "Push-token upload, inbox, call log and developer tools for apps woken "
                   "by sipwake. Authenticate as the SIP user: HTTP Digest or Basic with the "
                   "SIP credentials, or a bearer token from POST /v1/tokens. The voicemail "
                   "webhook and the admin endpoints take the service token "
                   "`[http] api_token` instead.",
}  # fmt: skip

SECURITY_SCHEMES: Json = {
    "digestAuth": {"type": "http", "scheme": "digest"},
    "basicAuth": {"type": "http", "scheme": "basic"},
    "bearerAuth": {"type": "http", "scheme": "bearer"},
    "serviceAuth": {"type": "http", "scheme": "bearer",
                    "description": "`[http] api_token` from the configuration: for "
                                   "services (voicemail webhook, admin), not users"},
}  # fmt: skip


def _own_paths() -> Json:
    """The node's: health and this document."""
    return {
        "/healthz": {"get": {
            "summary": "Liveness and store reachability",
            "security": [],
            "responses": {"200": returns({"type": "object"}, "up"),
                          "503": returns(Error, "store unavailable")},
        }},
        "/v1/openapi.json": {"get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": returns({"type": "object"}, "OpenAPI 3.1 document")},
        }},
    }  # fmt: skip


def spec() -> Json:
    paths = _own_paths()
    for resource in RESOURCES:
        paths.update(resource.openapi_paths())
    bodies = [Error, *(body for resource in RESOURCES for body in resource.BODIES)]
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "paths": paths,
        "security": USER_AUTH,
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": components(bodies)},
    }


def add_routes(app: web.Application) -> None:
    document = spec()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/v1/openapi.json", openapi)
