"""Bearer tokens, so an app need not keep sending its SIP password to the HTTP API.

    POST   /v1/tokens           SIP credentials (Basic or Digest) → a token;
                                body {"scope": "devices"} for one that can only
                                manage push devices (default "all")
    DELETE /v1/tokens/current   the token in the Authorization header is revoked
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from sipwake.api.auth import ApiAuth, Scope
from sipwake.api.jsonapi import read_body, reply
from sipwake.api.schema import UNAUTHORIZED, Json, error, request, returns
from sipwake.config import AuthConfig

MAX_BODY = 1024


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What the token may do: `devices` only manages push devices."""

    scope: Scope = "all"


class Token(msgspec.Struct):
    token: str
    token_type: Literal["Bearer"]
    scope: Scope
    expires_in: Annotated[int, Meta(examples=[AuthConfig().token_ttl])]
    expires_at: Annotated[int, Meta(description="unix seconds")]


BODIES = (TokenRequest, Token)


def openapi_paths() -> Json:
    return {
        "/v1/tokens": {"post": {
            "summary": "Bearer token for the SIP user (send SIP credentials, not a token)",
            "description": "Valid `[auth] token_ttl` seconds (24 h by default), until the "
                           "password changes, or until revoked. Scope `devices` can only "
                           "manage push devices.",
            "security": [{"digestAuth": []}, {"basicAuth": []}],
            "requestBody": request(TokenRequest, required=False),
            "responses": {"200": returns(Token, "a new token"),
                          "401": UNAUTHORIZED,
                          "403": error("too many failed attempts from this address "
                                       "(Retry-After)"),
                          "422": error("unknown field or scope")},
        }},
        "/v1/tokens/current": {"delete": {
            "summary": "Revoke the bearer token sent with this request",
            "security": [{"bearerAuth": []}],
            "responses": {"204": {"description": "revoked"}, "401": UNAUTHORIZED},
        }},
    }  # fmt: skip


def add_routes(app: web.Application, auth: ApiAuth) -> None:
    async def create(request: web.Request) -> web.Response:
        user = await auth.user(request, bearer=False)
        body = TokenRequest()
        if request.can_read_body:
            body = await read_body(request, TokenRequest, MAX_BODY)
        ttl = auth.settings.token_ttl
        now = time.time()
        token = auth.issue(user, body.scope, now)
        doc = Token(token, "Bearer", body.scope, ttl, int(now + ttl))
        return reply(doc, headers={"Cache-Control": "no-store"})

    async def revoke(request: web.Request) -> web.Response:
        await auth.revoke(request)
        return web.Response(status=204)

    app.router.add_post("/v1/tokens", create)
    app.router.add_delete("/v1/tokens/current", revoke)
