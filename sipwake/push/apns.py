"""Apple Push Notification service provider (HTTP/2, token-based auth).

Requests: `POST /3/device/<token>` to the production or sandbox host with the
team's shared JWT. Responses are mapped to outcomes here; retries, token hygiene
and the push log are the service's job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.ids import random_uuid
from sipwake.push import apns_payload
from sipwake.push.apns_token import REFRESH_AFTER, ProviderToken, load_signing_key
from sipwake.push.h2client import H2Error, H2Pool, Headers, Response, unique
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
    parse_retry_after,
)
from sipwake.push.tls import client_context, parse_origin
from sipwake.store.models import Device

log = logging.getLogger("sipwake.push.apns")

# 400 reasons that mean the token (or the app it belongs to) cannot be pushed to.
TOKEN_REJECTED = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "TopicDisallowed"})


@dataclass(frozen=True, slots=True)
class APNsSettings:
    # team_id .. allow_insecure: the keys of [push.apns] (config.ApnsConfig), passed by
    # name by push_setup.py
    team_id: str
    key_id: str
    key_file: str  # .p8 auth key
    topic: str = ""  # bundle id for devices that did not give one
    url: str = "https://api.push.apple.com"
    sandbox_url: str = "https://api.sandbox.push.apple.com"
    ca_file: str = ""
    allow_insecure: bool = False  # accept http:// (h2c) URLs: local test servers only
    max_connections: int = 4  # per host; more are opened only when streams run out
    request_timeout: float = 10.0
    ping_interval: float = 60.0  # idle keepalive; connections are never closed for idling
    token_refresh: float = REFRESH_AFTER


class APNsProvider:
    name = "apns"

    def __init__(
        self,
        settings: APNsSettings,
        *,
        clock: Callable[[], float] = time.time,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.settings = settings
        if not 20 * 60 <= settings.token_refresh < 60 * 60:
            raise ValueError("APNs token_refresh must be between 20 and 60 minutes (Apple's rules)")
        if key is None:
            key = load_signing_key(Path(settings.key_file).read_bytes())
        self.token = ProviderToken(
            settings.team_id, settings.key_id, key, clock=clock,
            refresh_after=settings.token_refresh,
        )
        production = parse_origin(settings.url, settings.allow_insecure)
        sandbox = parse_origin(settings.sandbox_url, settings.allow_insecure)
        ctx = client_context(settings.ca_file, alpn=["h2"])
        self.pools = {
            sandboxed: H2Pool(
                origin,
                ctx,
                max_connections=settings.max_connections,
                request_timeout=settings.request_timeout,
                ping_interval=settings.ping_interval,
            )
            for sandboxed, origin in ((False, production), (True, sandbox))
        }
        self._base_path = {False: production.base_path, True: sandbox.base_path}

    def prepare(
        self, device: Device, notification: Notification, now: float, push_id: str = ""
    ) -> PreparedPush:
        request = apns_payload.build(device, notification, self.settings.topic)
        push_id = push_id or random_uuid()
        path = f"{self._base_path[device.sandbox]}/3/device/{request.token}".encode()
        headers: Headers = [
            (b"apns-push-type", request.push_type.encode()),
            (b"apns-topic", request.topic.encode()),
            (b"apns-priority", str(request.priority).encode()),
            unique(b"apns-expiration", str(request.expiration).encode()),
            unique(b"apns-collapse-id", request.collapse_id.encode()),
            unique(b"apns-id", push_id.encode()),
        ]
        return PreparedPush(
            provider=self.name,
            device_id=device.device_id,
            kind=notification.kind,
            push_id=push_id,
            headers=apns_payload.display_headers(request, push_id),
            payload=request.payload,
            body=request.body,
            sandbox=device.sandbox,
            wire=(path, headers),
        )

    async def attempt(
        self, push: PreparedPush, time_left: float | None = None
    ) -> AttemptResult:
        path, headers = push.wire
        auth = self.token.header()
        if time_left is not None:
            time_left = min(time_left, self.settings.request_timeout)
        try:
            response = await self.pools[push.sandbox].post(
                path, [(b"authorization", auth), *headers], push.body, time_left,
                push.kind in URGENT_KINDS,
            )
        except H2Error as exc:
            return AttemptResult(0, RETRY, str(exc) or type(exc).__name__, credential=auth)
        except Exception as exc:  # never an exception out of a send: a failed attempt
            log.warning("APNs request failed: %r", exc)
            return AttemptResult(0, RETRY, f"{type(exc).__name__}: {exc}".rstrip(": "),
                                 credential=auth)
        result = classify(response)
        result.credential = auth
        result.sent_at = response.sent_at
        return result

    def status(self) -> dict[str, str | float]:
        """The provider token as an operator sees it (admin page): when the JWT in use
        was minted (Apple refuses it after an hour; renewed after 50 min)."""
        return {"token_issued_at": self.token.issued_at, "team_id": self.settings.team_id}

    async def reauthorize(self, stale: object) -> None:
        if isinstance(stale, bytes):
            self.token.renew(stale)

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()


def classify(response: Response) -> AttemptResult:
    """Map an APNs response to an outcome."""
    status = response.status
    if status == 200:
        return AttemptResult(status, DELIVERED, answer_id=response.headers.get("apns-id", ""))
    reason, timestamp = "", None
    try:
        body = json.loads(response.body) if response.body else {}
        if isinstance(body, dict):
            reason = str(body.get("reason", ""))
            timestamp = body.get("timestamp")
    except ValueError:
        reason = response.body[:100].decode("utf-8", "replace")
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 410:
        # Unregistered / ExpiredToken: `timestamp` (ms) is when APNs learnt the token
        # went invalid; a token uploaded after that instant is a new one and is kept.
        token_at = None
        if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            token_at = timestamp / 1000.0
        return AttemptResult(status, INVALID_TOKEN, reason or "Unregistered", token_at=token_at)
    if status == 400 and reason in TOKEN_REJECTED:
        return AttemptResult(status, INVALID_TOKEN, reason)
    if status == 403 and reason == "ExpiredProviderToken":
        return AttemptResult(status, REAUTH, reason)
    if status == 429 or status >= 500:
        return AttemptResult(status, RETRY, reason, retry_after=retry_after)
    return AttemptResult(status, FAILED, reason)
