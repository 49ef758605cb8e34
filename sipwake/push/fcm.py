"""Firebase Cloud Messaging provider (HTTP v1 API).

`POST {url}/v1/projects/{project_id}/messages:send` with an OAuth2 bearer from
the service account. One request per message (there is no batch API any more);
httpx multiplexes them over HTTP/2 where the server offers it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from sipwake.ids import random_uuid
from sipwake.push import fcm_payload
from sipwake.push.fcm_auth import AccessTokenSource, AuthError
from sipwake.push.notification import Notification
from sipwake.push.provider import (
    DELIVERED,
    FAILED,
    INVALID_TOKEN,
    REAUTH,
    RETRY,
    AttemptResult,
    PreparedPush,
    SkipPush,
    parse_retry_after,
)
from sipwake.push.tls import client_context, parse_origin
from sipwake.store.models import Device


@dataclass(frozen=True, slots=True)
class FCMSettings:
    project_id: str
    service_account_file: str
    url: str = "https://fcm.googleapis.com"
    token_url: str = ""  # wins over the service account's token_uri
    ca_file: str = ""
    allow_insecure: bool = False  # accept http:// URLs: local test servers only
    request_timeout: float = 10.0
    max_connections: int = 20


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
        self._client = httpx.AsyncClient(
            http2=True,
            verify=client_context(settings.ca_file),
            timeout=settings.request_timeout,
            limits=httpx.Limits(max_connections=settings.max_connections),
        )

    def prepare(self, device: Device, notification: Notification, now: float) -> PreparedPush:
        if not device.push_token:
            raise SkipPush("no FCM registration token")
        message = fcm_payload.build(device, notification, now)
        return PreparedPush(
            provider=self.name,
            device_id=device.device_id,
            kind=notification.kind,
            push_id=random_uuid(),  # FCM names messages itself; this is ours, for the log
            headers={":path": self.path},
            payload=message,
            body=fcm_payload.dumps(message),
        )

    async def attempt(self, push: PreparedPush) -> AttemptResult:
        try:
            token = await self.auth.token()
        except AuthError as exc:
            return AttemptResult(0, RETRY if exc.retryable else FAILED, str(exc))
        try:
            response = await self._client.post(
                self.url,
                content=push.body,
                headers={
                    "authorization": f"Bearer {token}",
                    "content-type": "application/json; charset=utf-8",
                },
            )
        except httpx.HTTPError as exc:
            return AttemptResult(0, RETRY, str(exc) or type(exc).__name__, credential=token)
        result = classify(
            response.status_code, response.content, response.headers.get("retry-after")
        )
        result.credential = token
        return result

    async def reauthorize(self, stale: object) -> None:
        if isinstance(stale, str):
            self.auth.invalidate(stale)

    async def close(self) -> None:
        await self._client.aclose()


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


def classify(status: int, body: bytes, retry_after: str | None) -> AttemptResult:
    """Map an FCM v1 response to an outcome."""
    if status == 200:
        return AttemptResult(status, DELIVERED)
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
