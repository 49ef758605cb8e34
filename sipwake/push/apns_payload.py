"""Notification + device → APNs request (token, headers, JSON body). No I/O.

Which token and push type (DESIGN.md, RFC 8599 contract details):
- `call` to an iOS device in VoIP mode: PushKit push (`apns-push-type: voip`,
  topic `<bundle>.voip`) to the VoIP token. PushKit is used for calls *only*:
  iOS terminates apps that receive VoIP pushes they do not report to CallKit.
- everything else, and calls in alert mode: an alert push to the alert token,
  with the payload fields at the top level beside `aps`. A device that only has
  a VoIP token gets no alert pushes (APNs rejects alert pushes on PushKit tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sipwake.push.alert_text import alert_text, language
from sipwake.push.notification import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    MissedCallNotification,
    Notification,
    TestNotification,
    VoicemailNotification,
)
from sipwake.push.provider import InvalidDeviceToken, SkipPush
from sipwake.push.tokens import apns_token_problem
from sipwake.push.truncate import fit
from sipwake.store.models import Device

ALERT_LIMIT = 4096
VOIP_LIMIT = 5120

CALL_CATEGORY = "INCOMING_CALL"  # the app registers Answer/Decline actions for it

@dataclass(slots=True)
class ApnsRequest:
    token: str
    push_type: str  # "voip" | "alert"
    topic: str
    priority: int
    expiration: int
    collapse_id: str
    payload: dict[str, Any]
    body: bytes

    @property
    def limit(self) -> int:
        return VOIP_LIMIT if self.push_type == "voip" else ALERT_LIMIT


def dumps(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the same bytes are measured and sent."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _alert(n: Notification, privacy: bool, sound: str, locale: str = "") -> dict[str, Any]:
    """The `aps` dictionary of a user-visible alert (without the message preview).
    Its text goes twice: as keys for the app's Localizable.strings, shown in the
    phone's language, and finished in the device's `locale` (alert_text.py)."""
    aps: dict[str, Any] = {}
    if isinstance(n, CallNotification):
        aps["category"] = CALL_CATEGORY
        # The ringtone plays once (~15 s); the calls layer repeats the alert with
        # the same collapse id while the call stays parked.
        aps["sound"] = sound
    elif isinstance(n, CallCancelledNotification):
        pass  # same collapse id as the ringing alert, which it replaces; no sound
    elif isinstance(n, MissedCallNotification):
        aps["sound"] = "default"
        aps["thread-id"] = "missed_calls"
    elif isinstance(n, MessageNotification):
        aps["sound"] = "default"
        aps["thread-id"] = n.collapse(privacy)
    elif isinstance(n, VoicemailNotification):
        aps["sound"] = "default"
    elif isinstance(n, TestNotification):
        aps["sound"] = "default"
    else:  # pragma: no cover - exhaustive over the notification types
        raise TypeError(f"unknown notification {type(n).__name__}")
    text, lang = alert_text(n, privacy), language(locale)
    alert: dict[str, Any] = {"title": text.title(lang), "title-loc-key": text.title_key}
    if text.title_args:
        alert["title-loc-args"] = list(text.title_args)
    if text.body_key:
        alert["body"] = text.body(lang)
        alert["loc-key"] = text.body_key
        alert["loc-args"] = list(text.body_args)
    aps["alert"] = alert
    if n.badge is not None:
        aps["badge"] = n.badge
    return aps


def build(device: Device, n: Notification, default_topic: str) -> ApnsRequest:
    """The APNs request for `n` to `device`. Raises SkipPush or InvalidDeviceToken."""
    bundle = device.topic or default_topic
    bundle = bundle.removesuffix(".voip")
    if not bundle:
        raise SkipPush("no APNs topic (bundle id) for this device")
    fields = n.fields(device.privacy)
    voip = (
        isinstance(n, CallNotification)
        and device.call_mode == "voip"
        and device.platform == "ios"
        and bool(device.voip_token)
    )
    if voip:
        token, push_type, topic = device.voip_token, "voip", bundle + ".voip"
        payload: dict[str, Any] = {"aps": {}, **fields}
    else:
        # Calls in VoIP mode without a VoIP token fall back to an alert call push.
        if not device.push_token:
            raise SkipPush("no alert token (device has only a VoIP token)")
        token, push_type, topic = device.push_token, "alert", bundle
        aps = _alert(n, device.privacy, device.ringtone or "default", device.locale)
        payload = {"aps": aps, **fields}
    if problem := apns_token_problem(token):  # never let anything else into the path
        raise InvalidDeviceToken(problem)
    request = ApnsRequest(
        token=token.lower(),
        push_type=push_type,
        topic=topic,
        priority=10,  # calls and user-visible alerts: deliver immediately
        expiration=int(n.deadline),
        collapse_id=n.collapse(device.privacy),
        payload=payload,
        body=b"",
    )
    if isinstance(n, MessageNotification) and not device.privacy:
        _fit_preview(request, n.body)
    request.body = dumps(request.payload)
    if len(request.body) > request.limit:  # cannot happen: network fields are clipped
        raise ValueError(f"APNs payload of {len(request.body)} bytes over {request.limit}")
    return request


def _fit_preview(request: ApnsRequest, text: str) -> None:
    """Cut the preview (shown as the alert body and sent as `preview`) to fit."""
    payload = request.payload
    alert = payload["aps"].get("alert")

    def put(preview: str, truncated: bool) -> None:
        payload["preview"] = preview
        payload["truncated"] = truncated
        if alert is not None:
            if preview:
                alert["body"] = preview
            else:
                alert.pop("body", None)

    def size_of(preview: str, truncated: bool) -> int:
        put(preview, truncated)
        return len(dumps(payload))

    preview, truncated = fit(text, size_of, request.limit)
    put(preview, truncated)


def display_headers(request: ApnsRequest, push_id: str) -> dict[str, str]:
    """The request's APNs headers as the app developer would see them (no credentials)."""
    return {
        ":path": f"/3/device/{request.token}",
        "apns-push-type": request.push_type,
        "apns-topic": request.topic,
        "apns-priority": str(request.priority),
        "apns-expiration": str(request.expiration),
        "apns-collapse-id": request.collapse_id,
        "apns-id": push_id,
    }
