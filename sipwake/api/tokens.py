"""Bearer tokens, so an app need not keep sending its SIP password to the HTTP API.

    POST   /v1/tokens           SIP credentials (Basic or Digest) → a token;
                                body {"scope": "devices"} for one that can only
                                manage push devices (default "all")
    DELETE /v1/tokens/current   the token in the Authorization header is revoked
"""

from __future__ import annotations

import time

from aiohttp import web

from sipwake.api.auth import SCOPES, ApiAuth
from sipwake.api.jsonapi import invalid, read_json_object

MAX_BODY = 1024


def add_routes(app: web.Application, auth: ApiAuth) -> None:
    async def create(request: web.Request) -> web.Response:
        user = await auth.user(request, bearer=False)
        scope = "all"
        if request.can_read_body:
            body = await read_json_object(request, MAX_BODY)
            for name in body:
                if name != "scope":
                    raise invalid(name, "unknown field (accepted: scope)")
            scope = body.get("scope", "all")
            if scope not in SCOPES:
                raise invalid("scope", f"must be one of {', '.join(SCOPES)}")
        ttl = auth.settings.token_ttl
        now = time.time()
        token = auth.issue(user, scope, now)
        doc = {
            "token": token,
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": ttl,
            "expires_at": int(now + ttl),
        }
        return web.json_response(doc, headers={"Cache-Control": "no-store"})

    async def revoke(request: web.Request) -> web.Response:
        await auth.revoke(request)
        return web.Response(status=204)

    app.router.add_post("/v1/tokens", create)
    app.router.add_delete("/v1/tokens/current", revoke)
