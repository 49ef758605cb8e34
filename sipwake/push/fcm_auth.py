"""OAuth2 access tokens for FCM HTTP v1, from a service-account key.

google-auth signs the JWT assertion and talks to the token endpoint, but only
synchronously; firebase-admin calls it on the event loop and stalls every
connection for the duration of an HTTPS round trip. Here the refresh runs in a
worker thread, once, however many sends are waiting for it.
"""

from __future__ import annotations

import asyncio
import json
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

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
REFRESH_MARGIN = 300.0  # renew this long before the token expires


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

    def __init__(self, ssl_context: ssl.SSLContext, allow_insecure: bool) -> None:
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context))
        self._allow_insecure = allow_insecure

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
            with self._opener.open(request, timeout=timeout or 30) as reply:
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
        self._request = _UrllibRequest(ssl_context, allow_insecure)
        self._clock = clock
        self._token = ""
        self._expires_at = 0.0
        self._refreshing: asyncio.Future[str] | None = None
        self.refreshes = 0

    async def token(self) -> str:
        if self._token and self._clock() < self._expires_at - REFRESH_MARGIN:
            return self._token
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
        # Shielded: one caller giving up must not cancel the refresh the others await.
        return await asyncio.shield(self._refreshing)

    def invalidate(self, stale: str) -> None:
        """FCM refused `stale`: the next token() fetches a new one (once)."""
        if stale and stale == self._token:
            self._token = ""

    async def _refresh(self) -> str:
        try:
            loop = asyncio.get_running_loop()
            token, lifetime = await loop.run_in_executor(None, self._refresh_blocking)
            self._token, self._expires_at = token, self._clock() + lifetime
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
        token = str(self._credentials.token)
        expiry = self._credentials.expiry  # naive UTC datetime, or None
        lifetime = 3600.0
        if expiry is not None:
            lifetime = expiry.replace(tzinfo=UTC).timestamp() - time.time()
        return token, lifetime
