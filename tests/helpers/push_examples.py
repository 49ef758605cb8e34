"""The push payloads shown in docs/app-integration.md, made by the real builders
(push/apns_payload.py, push/fcm_payload.py) from fixed inputs, so the document cannot
drift from the code: tests/test_docs.py compares each ```json block that follows a
`<!-- payload: NAME -->` marker with `example(NAME)`.

After an intended change to a payload, rewrite the blocks:

    python -m tests.helpers.push_examples docs/app-integration.md
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sipwake.push import apns_payload, fcm_payload
from sipwake.push.notification import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    MissedCallNotification,
    Notification,
    TestNotification,
    VoicemailNotification,
)
from sipwake.store.models import Device

NOW = 1764180000  # unix seconds the examples are built at
AOR = "sip:alice@example.com"
BUNDLE = "com.example.dialer"
CALL_ID = "Xq3v9LmT2pQk7sWz"  # a park id (12 random bytes, base64url)


def ios(call_mode: str = "voip", privacy: bool = False) -> Device:
    return Device("iphone-1", AOR, "apns", "ios", push_token="a1" * 32, voip_token="b2" * 32,
                  topic=BUNDLE, call_mode=call_mode, ringtone="ring.caf", privacy=privacy)


def android(privacy: bool = False) -> Device:
    return Device("pixel-7", AOR, "fcm", "android", push_token="FCM_REGISTRATION_TOKEN",
                  topic="example-project", privacy=privacy)


def call(device: Device) -> CallNotification:
    return CallNotification(
        call_id=CALL_ID, caller_uri="sip:bob@example.com", caller_number="bob",
        caller_name="Bob Smith", pickup_uri=f"sip:pickup-{CALL_ID}.{device.device_id}@example.com",
        expires_at=NOW + 30,
    )  # fmt: skip


def cancelled(_: Device) -> CallCancelledNotification:
    return CallCancelledNotification(call_id=CALL_ID, reason="answered_elsewhere",
                                     deadline=NOW + 60)


def missed(_: Device) -> MissedCallNotification:
    return MissedCallNotification(call_id=CALL_ID, caller_uri="sip:bob@example.com",
                                  caller_number="bob", caller_name="Bob Smith", at=NOW,
                                  deadline=NOW + 86400)


def message(_: Device) -> MessageNotification:
    return MessageNotification(message_id="1042", from_uri="sip:bob@example.com",
                               from_number="bob", from_name="Bob Smith",
                               body="Are you coming tonight? 🎉", unread=3, badge=4,
                               deadline=NOW + 86400)


def voicemail(_: Device) -> VoicemailNotification:
    return VoicemailNotification(from_uri="sip:+4930123456@example.com", from_name="",
                                 duration=42, new=2, old=5, badge=6, deadline=NOW + 86400)


def test_alert(_: Device) -> TestNotification:
    return TestNotification(sent_at=NOW)


def _apns(device: Device, make: Callable[[Device], Notification]) -> dict[str, Any]:
    """What the app receives: the APNs payload (the `userInfo` of the notification or the
    PushKit `payload.dictionaryPayload`), with the request's headers beside it."""
    request = apns_payload.build(device, make(device), BUNDLE)
    return {
        "headers": {"apns-push-type": request.push_type, "apns-topic": request.topic,
                    "apns-priority": str(request.priority),
                    "apns-collapse-id": request.collapse_id},
        "payload": request.payload,
    }


def _fcm(device: Device, make: Callable[[Device], Notification]) -> dict[str, Any]:
    """What the app receives: `RemoteMessage.getData()`."""
    return dict(fcm_payload.build(device, make(device), NOW)["data"])


def _fcm_message(device: Device, make: Callable[[Device], Notification]) -> dict[str, Any]:
    """The whole FCM v1 message as sent (the app sees its `data`)."""
    return fcm_payload.build(device, make(device), NOW)


EXAMPLES: dict[str, Callable[[], dict[str, Any]]] = {
    "apns call voip": lambda: _apns(ios("voip"), call),
    "apns call alert": lambda: _apns(ios("alert"), call),
    "apns call_cancelled": lambda: _apns(ios(), cancelled),
    "apns missed_call": lambda: _apns(ios(), missed),
    "apns message": lambda: _apns(ios(), message),
    "apns message privacy": lambda: _apns(ios(privacy=True), message),
    "apns voicemail": lambda: _apns(ios(), voicemail),
    "apns test": lambda: _apns(ios(), test_alert),
    "fcm call message": lambda: _fcm_message(android(), call),
    "fcm call": lambda: _fcm(android(), call),
    "fcm call_cancelled": lambda: _fcm(android(), cancelled),
    "fcm missed_call": lambda: _fcm(android(), missed),
    "fcm message": lambda: _fcm(android(), message),
    "fcm voicemail": lambda: _fcm(android(), voicemail),
    "fcm test": lambda: _fcm(android(), test_alert),
}


def example(name: str) -> dict[str, Any]:
    return EXAMPLES[name]()


def render(name: str) -> str:
    return json.dumps(example(name), indent=2, ensure_ascii=False)


# a marked block, empty or not; its text never holds a line starting with ```
BLOCK = re.compile(r"<!-- payload: (?P<name>[^>]+?) -->\n```json\n(?P<json>(?:(?!```).*\n)*?)```")


def blocks(text: str) -> list[tuple[str, str]]:
    """(name, JSON text) of each marked block of a document."""
    return [(m.group("name"), m.group("json").strip()) for m in BLOCK.finditer(text)]


def rewrite(text: str) -> str:
    return BLOCK.sub(lambda m: f"<!-- payload: {m.group('name')} -->\n```json\n"
                               f"{render(m.group('name'))}\n```", text)


if __name__ == "__main__":
    for path in map(Path, sys.argv[1:]):
        path.write_text(rewrite(path.read_text()))
