"""OAuth2 access tokens for FCM HTTP v1, from a service-account key.

google-auth signs the JWT assertion and talks to the token endpoint, but only
synchronously; firebase-admin calls it on the event loop and stalls every
connection for the duration of an HTTPS round trip. Here the renewal runs in a
worker thread, once at a time, however many sends are waiting for it.

A token is renewed in the background once 80 % of its life has passed, and the
current one is used until it really expires (less a small margin): a slow,
stalled or failing token endpoint never holds a push while a valid token exists.
A failed renewal is tried again after a backoff (1 s doubling to 60 s). Only
when there is no valid token (at start, after FCM refused it, or after renewals
failed until it expired) does a push wait for the renewal, within its own
deadline (the caller's timeout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC
from email.message import Message
from pathlib import Path
from typing import Any

import google.auth.exceptions
import google.auth.transport
from google.oauth2 import service_account

from sipwake.push.tls import parse_origin

log = logging.getLogger("sipwake.push.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
RENEW_AT = 0.8  # share of a token's lifetime after which it is renewed in the background
EXPIRY_MARGIN = 30.0  # seconds before its expiry a token is no longer handed out
RETRY_MIN, RETRY_MAX = 1.0, 60.0  # backoff between failed renewals
REQUEST_TIMEOUT = 10.0  # seconds for one HTTP request to the token endpoint


class AuthError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Response(google.auth.transport.Response):
    def __init__(self, status: int, headers: Message, data: bytes) -> None:
        self._status, self._headers, self._data = status, dict(headers.items()), data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class _UrllibRequest(google.auth.transport.Request):
    """google-auth transport on the standard library (runs in a worker thread).

    Uses our TLS context (system trust + ca_file) rather than certifi.
    """

    def __init__(
        self, ssl_context: ssl.SSLContext, allow_insecure: bool, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context))
        self._allow_insecure = allow_insecure
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        try:
            parse_origin(url, self._allow_insecure)
        except ValueError as exc:
            raise google.auth.exceptions.TransportError(str(exc)) from exc  # type: ignore[no-untyped-call]
        request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
        try:
            with self._opener.open(request, timeout=timeout or self._timeout) as reply:
                return _Response(reply.status, reply.headers, reply.read())
        except urllib.error.HTTPError as exc:
            return _Response(exc.code, exc.headers, exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise google.auth.exceptions.TransportError(str(exc)) from exc  # type: ignore[no-untyped-call]


class AccessTokenSource:
    def __init__(
        self,
        service_account_file: str,
        *,
        token_url: str = "",
        ssl_context: ssl.SSLContext,
        allow_insecure: bool = False,
        clock: Callable[[], float] = time.time,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        info = json.loads(Path(service_account_file).read_text())
        if token_url:  # configuration wins over the key file's token_uri
            info["token_uri"] = token_url
        parse_origin(str(info.get("token_uri", "")), allow_insecure)
        self.token_url = str(info["token_uri"])
        self.client_email = str(info.get("client_email", ""))
        self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[SCOPE]
        )
        self._request = _UrllibRequest(ssl_context, allow_insecure, request_timeout)
        self._clock = clock
        self._token = ""
        self._expires_at = 0.0  # clock() after which the token is not handed out
        self._renew_at = 0.0  # clock() from which a renewal runs in the background
        self._refreshing: asyncio.Future[str] | None = None
        self._retry_at = 0.0  # after a failed renewal: no background renewal before this
        self._failures = 0
        self.last_error: AuthError | None = None
        self.refreshes = 0
        self.issued_at = 0.0  # clock() when the current token came (the admin page's age)

    def current(self) -> str | None:
        """The valid token, at once, or None. Starts a background renewal when one is
        due (never waits for it)."""
        now = self._clock()
        if (now >= self._renew_at and now >= self._retry_at and self._refreshing is None):
            self._start_refresh()
        if self._token and now < self._expires_at:
            return self._token
        return None

    async def token(self) -> str:
        """A valid token: the current one, else the renewal's result (waiting for it;
        the caller bounds the wait with its own timeout). Raises AuthError."""
        current = self.current()
        if current is not None:
            return current
        refreshing = self._refreshing
        if refreshing is None:
            if self._clock() < self._retry_at and self.last_error is not None:
                # the renewal just failed: its error, without asking again at once
                raise self.last_error
            refreshing = self._start_refresh()
        # Shielded: one caller giving up must not cancel the renewal the others await.
        return await asyncio.shield(refreshing)

    def status(self) -> dict[str, str | float]:
        """The OAuth token as an operator sees it: when it came, until when it is handed
        out, the last renewal error."""
        return {"token_issued_at": self.issued_at, "token_expires_at": self._expires_at,
                "auth_error": str(self.last_error or "")}

    def invalidate(self, stale: str) -> None:
        """FCM refused `stale`: it is no longer handed out; the next token() waits for a
        new one (one renewal for every request that saw the same token refused)."""
        if stale and stale == self._token:
            self._token = ""
            self._expires_at = self._renew_at = self._retry_at = 0.0

    def _start_refresh(self) -> asyncio.Future[str]:
        refreshing = asyncio.ensure_future(self._refresh())
        # nobody may be waiting for a background renewal: its failure is logged, not raised
        refreshing.add_done_callback(_retrieve)
        self._refreshing = refreshing
        return refreshing

    async def _refresh(self) -> str:
        try:
            loop = asyncio.get_running_loop()
            try:
                token, lifetime = await loop.run_in_executor(None, self._refresh_blocking)
            except AuthError as exc:
                self._failures += 1
                delay = min(RETRY_MAX, RETRY_MIN * 2 ** (self._failures - 1))
                self._retry_at = self._clock() + delay
                self.last_error = exc
                left = self._expires_at - self._clock() if self._token else 0.0
                log.warning("FCM access token renewal failed (%s); %s; next try in %.0f s",
                            exc, f"the current token is valid {left:.0f} s more" if left > 0
                            else "no valid token", delay)
                raise
            now = self._clock()
            self._token = token
            self.issued_at = now
            self._expires_at = now + max(0.0, lifetime - EXPIRY_MARGIN)
            self._renew_at = now + lifetime * RENEW_AT
            self._failures, self._retry_at, self.last_error = 0, 0.0, None
            return token
        finally:
            self._refreshing = None

    def _refresh_blocking(self) -> tuple[str, float]:
        """Runs in a worker thread."""
        self.refreshes += 1
        try:
            self._credentials.refresh(self._request)
        except google.auth.exceptions.RefreshError as exc:
            raise AuthError(f"token refresh refused: {exc}", bool(exc.retryable)) from exc
        except google.auth.exceptions.TransportError as exc:
            raise AuthError(f"token endpoint unreachable: {exc}", True) from exc
        except Exception as exc:  # whatever google-auth or the transport raised
            raise AuthError(f"token refresh failed: {exc!r}", True) from exc
        token = str(self._credentials.token)
        expiry = self._credentials.expiry  # naive UTC datetime, or None
        lifetime = 3600.0
        if expiry is not None:
            lifetime = expiry.replace(tzinfo=UTC).timestamp() - time.time()
        return token, lifetime


def _retrieve(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()  # logged in _refresh; marked retrieved here
