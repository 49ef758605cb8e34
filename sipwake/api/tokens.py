"""`POST /v1/tokens`: trade SIP credentials (Basic or Digest) for a bearer token,
so an app need not keep sending its SIP password to the HTTP API."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from sipwake.api.auth import TOKEN_TTL, issue_token, require_user

if TYPE_CHECKING:
    from sipwake.server import Server


def add_routes(app: web.Application, server: Server) -> None:
    async def create(request: web.Request) -> web.Response:
        user = await require_user(request, server, bearer=False)
        now = time.time()
        token = issue_token(server.secret, user, TOKEN_TTL, now)
        body = {
            "token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "expires_at": int(now + TOKEN_TTL),
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    app.router.add_post("/v1/tokens", create)
