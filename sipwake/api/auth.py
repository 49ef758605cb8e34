"""Who is calling the HTTP API.

A user authenticates with their SIP credentials (HTTP Digest, RFC 7616, with the
SIP nonces and realm, or HTTP Basic; both checked against the stored digest HA1, so
no password is kept) or with a bearer token issued for them (`issue_token`).
Service endpoints (voicemail webhook, admin) take `[http] api_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from sipwake.sip.digest import AuthResult, ha1, parse_credentials
from sipwake.store.models import User

if TYPE_CHECKING:
    from sipwake.server import Server

TOKEN_TTL = 30 * 24 * 3600


def _unauthorized(server: Server, why: str, stale: bool = False) -> web.HTTPUnauthorized:
    """401 offering every scheme: Digest (one challenge per algorithm), Basic, Bearer."""
    realm = server.config.sip.realm
    headers: CIMultiDict[str] = CIMultiDict()
    for challenge in server.registrar.auth.digest.challenges(stale=stale):
        headers.add("WWW-Authenticate", challenge)
    headers.add("WWW-Authenticate", f'Basic realm="{realm}", Bearer realm="{realm}"')
    return web.HTTPUnauthorized(
        headers=headers,
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


async def require_user(request: web.Request, server: Server, *, bearer: bool = True) -> User:
    """The SIP user making this request, or 401. `bearer=False`: SIP credentials only
    (a token must not mint its own successors)."""
    cfg = server.config.sip
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            username, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized(server, "malformed Basic credentials") from None
        user = await server.store.get_user(username, cfg.domain)
        if user is None or not hmac.compare_digest(
            user.ha1_md5, ha1(username, cfg.realm, password, "MD5")
        ):
            raise _unauthorized(server, "wrong user or password")
        return user
    if scheme == "digest":
        return await _digest_user(request, server, header)
    if scheme == "bearer" and bearer:
        username_or_none = _check_token(server.secret, value.strip(), cfg.domain)
        if username_or_none is not None:
            user = await server.store.get_user(username_or_none, cfg.domain)
            if user is not None:
                return user
        raise _unauthorized(server, "invalid or expired token")
    raise _unauthorized(server, "credentials required")


async def _digest_user(request: web.Request, server: Server, header: str) -> User:
    digest = server.registrar.auth.digest
    creds = parse_credentials(header)
    if creds is None or creds.realm != digest.realm or creds.uri != request.raw_path:
        raise _unauthorized(server, "malformed Digest credentials")
    user = await server.store.get_user(creds.username, server.config.sip.domain)
    if user is None:
        raise _unauthorized(server, "wrong user or password")
    stored = user.ha1_sha256 if creds.algorithm == "SHA-256" else user.ha1_md5
    result = digest.verify(creds, request.method, stored)
    if result is AuthResult.OK:
        return user
    if result is AuthResult.STALE:
        raise _unauthorized(server, "nonce expired", stale=True)
    raise _unauthorized(server, "wrong user or password")


def require_service(request: web.Request, server: Server) -> None:
    """Service calls (webhooks, admin) carry `Authorization: Bearer <[http] api_token>`."""
    token = server.config.http.api_token
    header = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(
            text='{"error": "unauthorized", "detail": "service token required"}',
            content_type="application/json",
        )
