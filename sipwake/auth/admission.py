"""Who may do what: the one admission point for SIP and HTTP.

- `authenticate`: digest against a provisioned user (REGISTER with 401, requests a
  proxy authenticates with 407; HTTP Digest and Basic through `http_*`). Unknown user
  and wrong password get the same answer, after the same work. A failed answer spends
  its nonce, and failures count against the source address (throttle.py): over the
  limit, its requests are refused for a while without their credentials being read.
- `admit` (INVITE, MESSAGE, SUBSCRIBE, NOTIFY): a request from `[sip] trusted_peers`
  is taken as it is (a trunk, a voicemail server); one whose From is not our domain
  is refused (403); a local user's is challenged (407) and must come from the user
  in its From.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sipwake.auth.throttle import AuthThrottle
from sipwake.auth.users import UserDirectory
from sipwake.sip.digest import AuthResult, Credentials, DigestAuth, ha1, parse_credentials
from sipwake.sip.message import Message, make_response
from sipwake.sip.peer import TrustedPeers
from sipwake.sip.transaction import new_tag
from sipwake.sip.uri import URI
from sipwake.store.models import User

log = logging.getLogger("sipwake.auth")

# Checked when the user is unknown, so both cases cost the same (no timing oracle).
_NOBODY = "0" * 32


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


@dataclass(frozen=True, slots=True, init=False)
class Caller:
    """Who sent an admitted request: a local `user` who authenticated, or (user None)
    a trusted peer speaking for whoever its From names."""

    user: User | None

    def __init__(self, user: User | None) -> None:
        # written out, not generated: see speedups.py on dataclasses
        object.__setattr__(self, "user", user)

    @property
    def trusted(self) -> bool:
        return self.user is None


@dataclass(frozen=True, slots=True)
class HttpRefusal:
    """Why an HTTP request is not let in: `retry_after` > 0 when throttled."""

    detail: str
    stale: bool = False
    retry_after: int = 0


class Admission:
    def __init__(
        self,
        digest: DigestAuth,
        users: UserDirectory,
        domain: str,
        trusted: TrustedPeers,
        throttle: AuthThrottle,
        is_us: Callable[[str, int | None, bool], bool],
        failures: Counter | None = None,
    ) -> None:
        self.digest = digest
        self.users = users
        self.domain = domain
        self.trusted = trusted
        self.throttle = throttle
        self.is_us = is_us  # host, port, secure: one of our own listening addresses
        self.failures = failures

    def is_local(self, uri: URI) -> bool:
        """A SIP URI in our domain, or naming one of our own addresses."""
        return uri.is_sip and (
            uri.host == self.domain or self.is_us(uri.host, uri.port, uri.secure)
        )

    # ------------------------------------------------------------------- SIP
    async def admit(self, request: Message) -> Caller | Message:
        """INVITE, MESSAGE, SUBSCRIBE, NOTIFY: the caller, or the answer to send instead
        (407 challenge, 403)."""
        if self.trusted.trusts(request.source):
            return Caller(None)
        if not self.is_local(request.from_.uri):
            return _refuse(request, "not a trusted peer")
        checked = await self.authenticate(request, proxy=True)
        if isinstance(checked, Message):
            return checked
        if checked.username != request.from_.uri.user:
            return _refuse(request, "From is not you")
        return Caller(checked)

    async def authenticate(self, request: Message, proxy: bool = False) -> User | Message:
        """The user the digest credentials prove, or the answer to send instead: a
        401/407 challenge, or 403 (bad credentials, or a throttled source)."""
        source = request.source
        host = source.host if source is not None and not self.trusted.trusts(source) else ""
        if host and (wait := self.throttle.blocked(host)):
            return _refuse(request, "too many failed attempts", retry_after=wait)
        header = "Proxy-Authorization" if proxy else "Authorization"
        creds = None
        for value in request.get_all(header):
            c = parse_credentials(value)
            if c is not None and c.realm == self.digest.realm:
                creds = c
                break
        if creds is None:
            return self.challenge(request, proxy)
        user, result = await self._verify(creds, request.method)
        if user is not None and result is AuthResult.OK:
            return user
        if result is AuthResult.STALE:  # only said when the password was right
            return self.challenge(request, proxy, stale=True)
        if result is AuthResult.REPLAY:  # a used or spent nonce: ask again, learn nothing
            return self.challenge(request, proxy)
        self._failed(host, "sip", creds.username, request.source)
        return _refuse(request, "bad credentials")

    def challenge(self, request: Message, proxy: bool, stale: bool = False) -> Message:
        resp = make_response(request, 407 if proxy else 401, to_tag=new_tag())
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        for value in self.digest.challenges(stale=stale):
            resp.add(name, value)
        return resp

    async def _verify(self, creds: Credentials, method: str) -> tuple[User | None, AuthResult]:
        user = await self.users.get(creds.username, self.domain)
        if user is None:
            stored = _NOBODY
        else:
            stored = user.ha1_sha256 if creds.algorithm == "SHA-256" else user.ha1_md5
        result = self.digest.verify(creds, method, stored)
        return user, (result if user is not None else AuthResult.FAIL)

    def _failed(self, host: str, protocol: str, username: str, source: object) -> None:
        log.info("auth: %s failed for %r from %s", protocol, username[:64], source)
        if self.failures is not None:
            self.failures.inc()
        if host:
            self.throttle.failed(host)

    # ------------------------------------------------------------------ HTTP
    def http_blocked(self, ip: str) -> HttpRefusal | None:
        if self.trusted.trusts_host(ip):
            return None
        wait = self.throttle.blocked(ip)
        return HttpRefusal("too many failed attempts", retry_after=_seconds(wait)) if wait else None

    async def http_basic(self, ip: str, username: str, password: str) -> User | HttpRefusal:
        if refused := self.http_blocked(ip):
            return refused
        user = await self.users.get(username, self.domain)
        stored = user.ha1_md5 if user is not None else _NOBODY
        given = ha1(username, self.digest.realm, password, "MD5")
        if user is not None and hmac.compare_digest(stored, given):
            return user
        self._failed(self._countable(ip), "http", username, ip)
        return HttpRefusal("wrong user or password")

    async def http_digest(
        self, ip: str, header: str, method: str, path: str
    ) -> User | HttpRefusal:
        if refused := self.http_blocked(ip):
            return refused
        creds = parse_credentials(header)
        if creds is None or creds.realm != self.digest.realm or creds.uri != path:
            return HttpRefusal("malformed Digest credentials")
        user, result = await self._verify(creds, method)
        if user is not None and result is AuthResult.OK:
            return user
        if result is AuthResult.STALE:
            return HttpRefusal("nonce expired", stale=True)
        if result is AuthResult.REPLAY:
            return HttpRefusal("nonce used: ask again")
        self._failed(self._countable(ip), "http", creds.username, ip)
        return HttpRefusal("wrong user or password")

    def _countable(self, ip: str) -> str:
        return "" if self.trusted.trusts_host(ip) else ip


def without_credentials(request: Message) -> bool:
    """No Authorization at all: `authenticate` answers it from memory (a challenge, or
    403 to a throttled source), never reaching the users' store."""
    return request.get("authorization") is None


def _seconds(wait: float) -> int:
    return max(1, int(wait + 0.999))


def _refuse(request: Message, why: str, retry_after: float = 0.0) -> Message:
    """The same 403 whatever exactly failed (unknown user or wrong password)."""
    resp = make_response(request, 403, f"Forbidden ({why})", to_tag=new_tag())
    if retry_after:
        resp.add("Retry-After", str(_seconds(retry_after)))
    return resp
