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
import time
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from aiohttp import web
from multidict import CIMultiDict

from sipwake.api.jsonapi import api_error
from sipwake.auth import HttpRefusal
from sipwake.store.models import User

Scope = Literal["all", "devices"]
SCOPES: tuple[str, ...] = get_args(Scope)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The configuration the HTTP API reads."""

    domain: str  # [sip] domain: the users it serves
    realm: str  # [sip] realm, offered in the Basic and Bearer challenges
    api_token: str  # [http] api_token: service endpoints; empty: none accepted
    token_ttl: int  # [auth] token_ttl: seconds a bearer token is valid
    secret: bytes  # [sip] secret: the bearer tokens' HMAC key


class Challenges(Protocol):
    def challenges(self, stale: bool = False) -> list[str]: ...


class Authenticator(Protocol):
    """The HTTP side of `sipwake.auth.Admission`: credentials checked, failures counted
    against the client's address, a throttled address refused."""

    @property
    def digest(self) -> Challenges: ...

    async def http_basic(self, ip: str, username: str, password: str) -> User | HttpRefusal: ...

    async def http_digest(
        self, ip: str, header: str, method: str, path: str
    ) -> User | HttpRefusal: ...


class UserLookup(Protocol):
    """Provisioned users (`sipwake.auth.UserDirectory`)."""

    async def get(self, username: str, domain: str) -> User | None: ...


class TokenStore(Protocol):
    """Revoked bearer tokens, remembered until they would have expired."""

    async def revoke_token(self, token_id: str, expires_at: float) -> None: ...

    async def token_revoked(self, token_id: str) -> bool: ...


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


class ApiAuth:
    """The checks every handler starts with: `user` (SIP credentials or a bearer token)
    or `service` (`[http] api_token`)."""

    def __init__(
        self,
        settings: ApiSettings,
        admission: Authenticator,
        users: UserLookup,
        tokens: TokenStore,
    ) -> None:
        self.settings = settings
        self.admission = admission
        self.users = users
        self.tokens = tokens

    def _unauthorized(self, why: str, stale: bool = False) -> web.HTTPError:
        """401 offering every scheme: Digest (one challenge per algorithm), Basic, Bearer."""
        realm = self.settings.realm
        headers: CIMultiDict[str] = CIMultiDict()
        for challenge in self.admission.digest.challenges(stale=stale):
            headers.add("WWW-Authenticate", challenge)
        headers.add("WWW-Authenticate", f'Basic realm="{realm}", Bearer realm="{realm}"')
        return api_error(401, "unauthorized", why, headers=headers)

    def _refused(self, refusal: HttpRefusal) -> web.HTTPError:
        if refusal.retry_after:
            headers = {"Retry-After": str(refusal.retry_after)}
            return api_error(403, "forbidden", refusal.detail, headers=headers)
        return self._unauthorized(refusal.detail, refusal.stale)

    def issue(self, user: User, scope: str, now: float) -> str:
        return issue_token(self.settings.secret, user, self.settings.token_ttl, now, scope)

    async def _bearer_user(self, token: str, scope: str) -> tuple[User, str, int]:
        """The user a valid token was issued for, with the token's id and expiry."""
        parts = _token_parts(token)
        if parts is None:
            raise self._unauthorized("malformed token")
        username, expiry, token_scope, mac = parts
        if expiry < time.time():
            raise self._unauthorized("token expired")
        user = await self.users.get(username, self.settings.domain)
        body = token[: -len(mac) - 1]
        if user is None or not hmac.compare_digest(_mac(self.settings.secret, body, user), mac):
            raise self._unauthorized("invalid token (or the password changed)")
        if await self.tokens.token_revoked(mac):
            raise self._unauthorized("token revoked")
        if token_scope != "all" and token_scope != scope:
            raise api_error(403, "forbidden", f"this token's scope is {token_scope}")
        return user, mac, expiry

    async def user(
        self, request: web.Request, *, bearer: bool = True, scope: str = "all"
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
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise self._unauthorized("malformed Basic credentials") from None
            username, _, password = decoded.partition(":")
            found = await self.admission.http_basic(ip, username, password)
        elif scheme == "digest":
            found = await self.admission.http_digest(
                ip, header, request.method, request.raw_path
            )
        elif scheme == "bearer" and bearer:
            return (await self._bearer_user(value.strip(), scope))[0]
        else:
            raise self._unauthorized("credentials required")
        if isinstance(found, HttpRefusal):
            raise self._refused(found)
        return found

    async def revoke(self, request: web.Request) -> None:
        """Revoke the bearer token this request carries (any scope may end itself)."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            raise self._unauthorized("a bearer token is required to revoke it")
        parts = _token_parts(value.strip())
        scope = parts[2] if parts is not None else "all"
        _, token_id, expiry = await self._bearer_user(value.strip(), scope)
        await self.tokens.revoke_token(token_id, float(expiry))

    def service(self, request: web.Request) -> None:
        """Service calls (webhooks, admin) carry `Authorization: Bearer <[http] api_token>`."""
        token = self.settings.api_token
        header = request.headers.get("Authorization", "")
        if not token or not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
            raise api_error(401, "unauthorized", "service token required")
