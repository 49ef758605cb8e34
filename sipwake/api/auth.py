"""Who is calling the HTTP API.

A user authenticates with their SIP credentials (HTTP Basic, checked against the
stored digest HA1, so no password is kept) or with a bearer token issued for them
(`issue_token`). Service endpoints (voicemail webhook, admin) take `[http] api_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import TYPE_CHECKING

from aiohttp import web

from sipwake.sip.digest import ha1
from sipwake.store.models import User

if TYPE_CHECKING:
    from sipwake.server import Server

TOKEN_TTL = 30 * 24 * 3600


def _unauthorized(realm: str, why: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        headers={"WWW-Authenticate": f'Basic realm="{realm}", Bearer realm="{realm}"'},
        text=f'{{"error": "unauthorized", "detail": "{why}"}}',
        content_type="application/json",
    )


def issue_token(secret: bytes, user: User, ttl: int = TOKEN_TTL, now: float | None = None) -> str:
    """`<username>.<expiry>.<mac>`: verifiable by any node sharing `[sip] secret`."""
    expiry = int((now or time.time()) + ttl)
    body = f"{user.username}.{expiry}"
    mac = hmac.new(secret, f"{body}@{user.domain}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{mac}"


def _check_token(secret: bytes, token: str, domain: str) -> str | None:
    """The username a valid, unexpired token was issued for."""
    body, _, mac = token.rpartition(".")
    username, _, expiry = body.rpartition(".")
    if not username or not expiry.isdigit() or int(expiry) < time.time():
        return None
    want = hmac.new(secret, f"{body}@{domain}".encode(), hashlib.sha256).hexdigest()[:32]
    return username if hmac.compare_digest(want, mac) else None


async def require_user(request: web.Request, server: Server) -> User:
    """The SIP user making this request, or 401."""
    cfg = server.config.sip
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            username, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized(cfg.realm, "malformed Basic credentials") from None
        user = await server.store.get_user(username, cfg.domain)
        if user is None or not hmac.compare_digest(
            user.ha1_md5, ha1(username, cfg.realm, password, "MD5")
        ):
            raise _unauthorized(cfg.realm, "wrong user or password")
        return user
    if scheme == "bearer":
        username_or_none = _check_token(server.secret, value.strip(), cfg.domain)
        if username_or_none is not None:
            user = await server.store.get_user(username_or_none, cfg.domain)
            if user is not None:
                return user
        raise _unauthorized(cfg.realm, "invalid or expired token")
    raise _unauthorized(cfg.realm, "credentials required")


def require_service(request: web.Request, server: Server) -> None:
    """Service calls (webhooks, admin) carry `Authorization: Bearer <[http] api_token>`."""
    token = server.config.http.api_token
    header = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(
            text='{"error": "unauthorized", "detail": "service token required"}',
            content_type="application/json",
        )
