"""Who is calling the HTTP API.

A user authenticates with their SIP credentials (HTTP Digest, RFC 7616, with the
SIP nonces and realm, or HTTP Basic; both checked against the stored digest HA1, so
no password is kept) or with a bearer token issued for them (`issue_token`). Failed
credentials count against the client's address like failed SIP digests (auth/).
Service endpoints (voicemail webhook, admin) take `[http] api_token`.

Bearer tokens are `<username>.<expiry>.<scope>.<mac>`, verifiable by any node that
shares `[sip] secret`. The MAC covers the user's HA1, so a password change revokes
every token issued before it; `DELETE /v1/tokens/current` revokes one (the store
remembers it until it would have expired). Scope `devices` is for apps that only
upload push tokens; `all` reaches everything the user may.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from sipwake.auth import HttpRefusal
from sipwake.store.models import User

if TYPE_CHECKING:
    from sipwake.server import Server

SCOPES = ("all", "devices")


def _unauthorized(server: Server, why: str, stale: bool = False) -> web.HTTPUnauthorized:
    """401 offering every scheme: Digest (one challenge per algorithm), Basic, Bearer."""
    realm = server.config.sip.realm
    headers: CIMultiDict[str] = CIMultiDict()
    for challenge in server.admission.digest.challenges(stale=stale):
        headers.add("WWW-Authenticate", challenge)
    headers.add("WWW-Authenticate", f'Basic realm="{realm}", Bearer realm="{realm}"')
    return web.HTTPUnauthorized(
        headers=headers,
        text=json.dumps({"error": "unauthorized", "field": None, "detail": why}),
        content_type="application/json",
    )


def _refused(server: Server, refusal: HttpRefusal) -> web.HTTPError:
    if refusal.retry_after:
        return web.HTTPForbidden(
            headers={"Retry-After": str(refusal.retry_after)},
            text=json.dumps({"error": "forbidden", "field": None, "detail": refusal.detail}),
            content_type="application/json",
        )
    return _unauthorized(server, refusal.detail, refusal.stale)


def _mac(secret: bytes, body: str, user: User) -> str:
    message = f"{body}@{user.domain}\0{user.ha1_sha256}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def issue_token(
    secret: bytes, user: User, ttl: int, now: float | None = None, scope: str = "all"
) -> str:
    expiry = int((time.time() if now is None else now) + ttl)
    body = f"{user.username}.{expiry}.{scope}"
    return f"{body}.{_mac(secret, body, user)}"


def _token_parts(token: str) -> tuple[str, int, str, str] | None:
    """(username, expiry, scope, mac) of a well-formed token."""
    parts = token.rsplit(".", 3)
    if len(parts) != 4:
        return None
    username, expiry, scope, mac = parts
    if not username or not expiry.isdigit() or len(expiry) > 12 or scope not in SCOPES:
        return None
    return username, int(expiry), scope, mac


async def _bearer_user(server: Server, token: str, scope: str) -> tuple[User, str, int]:
    """The user a valid token was issued for, with the token's id and expiry."""
    parts = _token_parts(token)
    if parts is None:
        raise _unauthorized(server, "malformed token")
    username, expiry, token_scope, mac = parts
    if expiry < time.time():
        raise _unauthorized(server, "token expired")
    user = await server.users.get(username, server.config.sip.domain)
    body = token[: -len(mac) - 1]
    if user is None or not hmac.compare_digest(_mac(server.secret, body, user), mac):
        raise _unauthorized(server, "invalid token (or the password changed)")
    if await server.store.token_revoked(mac):
        raise _unauthorized(server, "token revoked")
    if token_scope != "all" and token_scope != scope:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "forbidden", "field": None,
                             "detail": f"this token's scope is {token_scope}"}),
            content_type="application/json",
        )  # fmt: skip
    return user, mac, expiry


async def require_user(
    request: web.Request, server: Server, *, bearer: bool = True, scope: str = "all"
) -> User:
    """The SIP user making this request, or 401 (403 while the client's address is
    throttled). `bearer=False`: SIP credentials only (a token must not mint its own
    successors). `scope`: what the endpoint needs of a bearer token."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    ip = request.remote or ""
    if scheme == "basic":
        try:
            username, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized(server, "malformed Basic credentials") from None
        found = await server.admission.http_basic(ip, username, password)
    elif scheme == "digest":
        found = await server.admission.http_digest(ip, header, request.method, request.raw_path)
    elif scheme == "bearer" and bearer:
        return (await _bearer_user(server, value.strip(), scope))[0]
    else:
        raise _unauthorized(server, "credentials required")
    if isinstance(found, HttpRefusal):
        raise _refused(server, found)
    return found


async def revoke_bearer(request: web.Request, server: Server) -> None:
    """Revoke the bearer token this request carries (any scope may end itself)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise _unauthorized(server, "a bearer token is required to revoke it")
    parts = _token_parts(value.strip())
    scope = parts[2] if parts is not None else "all"
    _, token_id, expiry = await _bearer_user(server, value.strip(), scope)
    await server.store.revoke_token(token_id, float(expiry))


def require_service(request: web.Request, server: Server) -> None:
    """Service calls (webhooks, admin) carry `Authorization: Bearer <[http] api_token>`."""
    token = server.config.http.api_token
    header = request.headers.get("Authorization", "")
    if not token or not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(
            text='{"error": "unauthorized", "field": null, "detail": "service token required"}',
            content_type="application/json",
        )
