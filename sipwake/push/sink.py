"""Developer sink: where pushes go when neither APNs nor FCM is configured.

Each push is encoded exactly as it would be for the device's provider (same
headers, same payload, same truncation), logged, and kept in a bounded ring
that the HTTP API shows at `GET /v1/dev/pushes`, so an app developer can run
`sipwake serve` without credentials and see what their app would receive.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from sipwake.ids import random_uuid
from sipwake.push import apns_payload, fcm_payload
from sipwake.push.notification import Notification
from sipwake.push.provider import DELIVERED, AttemptResult, PreparedPush, SkipPush
from sipwake.store.models import Device

log = logging.getLogger("sipwake.push.sink")

PLACEHOLDER_TOPIC = "unknown.bundle.id"  # for iOS devices that sent no bundle id


class PushSink:
    name = "sink"

    def __init__(self, capacity: int = 200, *, clock: Callable[[], float] = time.time) -> None:
        self._ring: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._clock = clock

    def prepare(
        self, device: Device, notification: Notification, now: float, push_id: str = ""
    ) -> PreparedPush:
        push_id = push_id or random_uuid()
        if device.provider == "apns":
            request = apns_payload.build(device, notification, PLACEHOLDER_TOPIC)
            return PreparedPush(
                provider="apns",
                device_id=device.device_id,
                kind=notification.kind,
                push_id=push_id,
                headers=apns_payload.display_headers(request, push_id),
                payload=request.payload,
                body=request.body,
                sandbox=device.sandbox,
            )
        if device.provider == "fcm":
            if not device.push_token:
                raise SkipPush("no FCM registration token")
            message = fcm_payload.build(device, notification, now)
            return PreparedPush(
                provider="fcm",
                device_id=device.device_id,
                kind=notification.kind,
                push_id=push_id,
                headers={":path": "/v1/projects/{project_id}/messages:send"},
                payload=message,
                body=fcm_payload.dumps(message),
            )
        raise SkipPush(f"unknown push provider {device.provider!r}")

    async def attempt(
        self, push: PreparedPush, time_left: float | None = None
    ) -> AttemptResult:
        entry = push.as_json()
        entry["at"] = self._clock()
        entry["size"] = len(push.body)
        self._ring.append(entry)
        # no token and no text in the log: GET /v1/dev/pushes shows them to their owner
        log.info("%s push to device %s (%s, %d bytes): not sent, no provider configured; "
                 "see GET /v1/dev/pushes", push.kind, push.device_id, push.provider,
                 entry["size"])  # fmt: skip
        return AttemptResult(200, DELIVERED)

    async def reauthorize(self, stale: object) -> None:
        return None

    async def close(self) -> None:
        return None

    def pushes(
        self, limit: int | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]:
        """What apps would have received, newest first, as JSON-able dicts:
        {provider, device_id, type, push_id, sandbox, headers, payload, at, size}."""
        out: list[dict[str, Any]] = []
        for entry in reversed(self._ring):
            if device_id is not None and entry["device_id"] != device_id:
                continue
            out.append(json.loads(json.dumps(entry)))  # a deep copy the caller may keep
            if limit is not None and len(out) >= limit:
                break
        return out

    def clear(self) -> None:
        self._ring.clear()
