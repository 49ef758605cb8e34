"""Firebase Cloud Messaging provider (HTTP v1 API).

`POST {url}/v1/projects/{project_id}/messages:send` with an OAuth2 bearer from
the service account. One request per message (there is no batch API any more),
multiplexed over a few long-lived HTTP/2 connections by the same client as APNs
(h2client.H2Pool): the same deadline per request, the same GOAWAY handling, and
every transport failure an H2Error, i.e. a retry. (httpx's timeouts are per read,
so a stalled stream on a busy shared connection never timed out, and some of its
connection errors, anyio.EndOfStream, escaped as exceptions.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sipwake.ids import random_uuid
from sipwake.push import fcm_payload
from sipwake.push.fcm_auth import AccessTokenSource, AuthError
from sipwake.push.h2client import H2Error, H2Pool, Headers
from sipwake.push.notification import Notification
from sipwake.push.provider import (
    DELIVERED,
    FAILED,
    INVALID_TOKEN,
    REAUTH,
    RETRY,
    URGENT_KINDS,
    AttemptResult,
    PreparedPush,
    SkipPush,
    parse_retry_after,
)
from sipwake.push.tls import client_context, parse_origin
from sipwake.store.models import Device


@dataclass(frozen=True, slots=True)
class FCMSettings:
    # project_id .. allow_insecure: the keys of [push.fcm] (config.FcmConfig), passed by
    # name by push_setup.py
    project_id: str
    service_account_file: str
    url: str = "https://fcm.googleapis.com"
    token_url: str = ""  # wins over the service account's token_uri
    ca_file: str = ""
    allow_insecure: bool = False  # accept http:// URLs: local test servers only
    request_timeout: float = 10.0  # one attempt: waiting for a token, a stream, the answer
    max_connections: int = 4  # more are opened only when streams run out
    ping_interval: float = 60.0


log = logging.getLogger("sipwake.push.fcm")

_CONTENT_TYPE = (b"content-type", b"application/json; charset=utf-8")


class FCMProvider:
    name = "fcm"

    def __init__(self, settings: FCMSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        origin = parse_origin(settings.url, settings.allow_insecure)
        project = quote(settings.project_id, safe="")
        self.path = f"{origin.base_path}/v1/projects/{project}/messages:send"
        self.url = f"{origin.scheme}://{origin.authority}{self.path}"
        self.auth = AccessTokenSource(
            settings.service_account_file,
            token_url=settings.token_url,
            ssl_context=client_context(settings.ca_file),
            allow_insecure=settings.allow_insecure,
            clock=clock,
        )
        self.pool = H2Pool(
            origin,
            client_context(settings.ca_file, alpn=["h2"]),
            max_connections=settings.max_connections,
            request_timeout=settings.request_timeout,
            ping_interval=settings.ping_interval,
        )
        self._path = self.path.encode()
        self._bearer = ("", b"")  # the last token and its header value

    def prepare(
        self, device: Device, notification: Notification, now: float, push_id: str = ""
    ) -> PreparedPush:
        if not device.push_token:
            raise SkipPush("no FCM registration token")
        message = fcm_payload.build(device, notification, now)
        return PreparedPush(
            provider=self.name,
            device_id=device.device_id,
            kind=notification.kind,
            push_id=push_id or random_uuid(),  # FCM names messages itself; ours, for the log
            headers={":path": self.path},
            payload=message,
            body=fcm_payload.dumps(message),
        )

    async def attempt(
        self, push: PreparedPush, time_left: float | None = None
    ) -> AttemptResult:
        loop = asyncio.get_running_loop()
        limit = self.settings.request_timeout
        deadline = loop.time() + (limit if time_left is None else min(limit, time_left))
        token = self.auth.current()
        if token is None:  # no valid token: wait for the renewal, within this attempt
            # asyncio.wait, not asyncio.timeout: nothing before the first wait may need
            # the current task (a push can start in the caller's turn: Tasks.start)
            renewal = asyncio.ensure_future(self.auth.token())
            try:
                await asyncio.wait((renewal,), timeout=max(0.0, deadline - loop.time()))
            finally:
                if not renewal.done():
                    renewal.cancel()  # the renewal itself is shielded: only our wait ends
            if renewal.cancelled() or not renewal.done():
                return AttemptResult(0, RETRY, "no access token yet (token endpoint slow)")
            try:
                token = renewal.result()
            except AuthError as exc:
                # Not the device's fault, nor the push's: kept and retried (a key that was
                # revoked comes back once the operator fixes the configuration).
                return AttemptResult(0, RETRY, str(exc))
        if self._bearer[0] != token:
            self._bearer = (token, b"Bearer " + token.encode())
        headers: Headers = [(b"authorization", self._bearer[1]), _CONTENT_TYPE]
        try:
            response = await self.pool.post(self._path, headers, push.body,
                                            deadline - loop.time(), push.kind in URGENT_KINDS)
        except H2Error as exc:
            return AttemptResult(0, RETRY, str(exc) or type(exc).__name__, credential=token)
        except Exception as exc:  # never an exception out of a send: a failed attempt
            log.warning("FCM request failed: %r", exc)
            return AttemptResult(0, RETRY, f"{type(exc).__name__}: {exc}".rstrip(": "),
                                 credential=token)
        result = classify(response.status, response.body, response.headers.get("retry-after"))
        result.credential = token
        result.sent_at = response.sent_at
        return result

    def status(self) -> dict[str, str | float]:
        """The OAuth access token as an operator sees it (admin page)."""
        return {**self.auth.status(), "project_id": self.settings.project_id}

    async def reauthorize(self, stale: object) -> None:
        if isinstance(stale, str):
            self.auth.invalidate(stale)

    async def close(self) -> None:
        await self.pool.close()


def _error(body: bytes) -> tuple[str, str, str, list[str]]:
    """(status, FCM errorCode, message, fields in violation) from a Google API error body."""
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return "", "", body[:100].decode("utf-8", "replace"), []
    if not isinstance(error, dict):
        return "", "", "", []
    code, fields = "", []
    details: list[Any] = error.get("details") or []
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type", "").endswith("google.firebase.fcm.v1.FcmError"):
            code = str(detail.get("errorCode", ""))
        for violation in detail.get("fieldViolations") or []:
            if isinstance(violation, dict):
                fields.append(str(violation.get("field", "")))
    return str(error.get("status", "")), code, str(error.get("message", "")), fields


def _message_name(body: bytes) -> str:
    """The `name` FCM gives an accepted message ({"name": "projects/p/messages/0:…"})."""
    try:
        name = json.loads(body).get("name", "") if body else ""
    except (ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""


def classify(status: int, body: bytes, retry_after: str | None) -> AttemptResult:
    """Map an FCM v1 response to an outcome."""
    if status == 200:
        return AttemptResult(status, DELIVERED, answer_id=_message_name(body))
    api_status, code, message, fields = _error(body)
    reason = code or api_status or f"HTTP {status}"
    if status == 404 and code == "UNREGISTERED":
        return AttemptResult(status, INVALID_TOKEN, reason)
    if status == 400 and (
        "message.token" in fields or "registration token" in message.lower()
    ):
        return AttemptResult(status, INVALID_TOKEN, reason)
    if status == 403 and code == "SENDER_ID_MISMATCH":
        return AttemptResult(status, INVALID_TOKEN, reason)
    if status == 401 and code != "THIRD_PARTY_AUTH_ERROR":
        return AttemptResult(status, REAUTH, reason)  # our access token was refused
    if status == 429 or status >= 500:
        return AttemptResult(status, RETRY, reason, retry_after=parse_retry_after(retry_after))
    return AttemptResult(status, FAILED, reason)
