"""Digest authentication of requests against provisioned users.

REGISTER is challenged with 401/WWW-Authenticate; requests a proxy authenticates
(INVITE, MESSAGE, SUBSCRIBE) with 407/Proxy-Authenticate.
"""

from __future__ import annotations

import logging

from sipwake.registrar.users import UserDirectory
from sipwake.sip.digest import AuthResult, DigestAuth, parse_credentials
from sipwake.sip.message import Message, make_response
from sipwake.sip.transaction import new_tag
from sipwake.store.models import User

log = logging.getLogger("sipwake.auth")


class Authenticator:
    def __init__(self, digest: DigestAuth, users: UserDirectory, domain: str) -> None:
        self.digest = digest
        self.users = users
        self.domain = domain

    async def check(self, request: Message, proxy: bool = False) -> User | Message:
        """The authenticated user, or the response to send instead (401/407/403)."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        creds = None
        for value in request.get_all(header):
            c = parse_credentials(value)
            if c is not None and c.realm == self.digest.realm:
                creds = c
                break
        if creds is None:
            return self.challenge(request, proxy)
        user = await self.users.get(creds.username, self.domain)
        if user is None:
            log.info("auth: unknown user %r from %s", creds.username, request.source)
            return make_response(request, 403, "Forbidden (unknown user)", to_tag=new_tag())
        ha1 = user.ha1_sha256 if creds.algorithm == "SHA-256" else user.ha1_md5
        result = self.digest.verify(creds, request.method, ha1)
        if result is AuthResult.OK:
            return user
        if result is AuthResult.STALE:
            return self.challenge(request, proxy, stale=True)
        log.info("auth: %s for %r from %s", result.name, creds.username, request.source)
        if result is AuthResult.REPLAY:
            return self.challenge(request, proxy)
        return make_response(request, 403, "Forbidden (bad credentials)", to_tag=new_tag())

    async def check_sender(self, request: Message) -> User | Message:
        """A local user's request to someone else (INVITE, MESSAGE): the user, or the
        response to send instead: 407 to authenticate, 403 when From is somebody else."""
        checked = await self.check(request, proxy=True)
        if isinstance(checked, Message):
            return checked
        if checked.username != request.from_.uri.user:
            return make_response(request, 403, "Forbidden (From is not you)", to_tag=new_tag())
        return checked

    def challenge(self, request: Message, proxy: bool, stale: bool = False) -> Message:
        resp = make_response(request, 407 if proxy else 401, to_tag=new_tag())
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        for value in self.digest.challenges(stale=stale):
            resp.add(name, value)
        return resp
