"""Notification + device → FCM HTTP v1 message. No I/O.

Android apps get data-only messages and draw their own call screen or
notification, so everything travels in `data`, where FCM requires every value to
be a string and limits keys plus values to 4096 UTF-8 bytes.
"""

from __future__ import annotations

import json
from typing import Any

from sipwake.push.alert_text import alert_text, language
from sipwake.push.notification import MessageNotification, Notification, Value
from sipwake.push.truncate import fit
from sipwake.store.models import Device

DATA_LIMIT = 4096


def as_string(value: Value) -> str:
    """FCM data value: ints as decimal, booleans as "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def data_size(data: dict[str, str]) -> int:
    """What FCM counts against its limit: UTF-8 bytes of keys plus values."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def alert_fields(n: Notification, privacy: bool, locale: str) -> dict[str, str]:
    """What the app may show, as on iOS (alert_text.py): `title` and `body` in the
    device's locale, and the keys for the app's own strings with their arguments
    (`*_loc_args` a JSON array, as FCM data values are strings). No `body` for a
    message: its `preview` is the body."""
    text, lang = alert_text(n, privacy), language(locale)
    fields = {"title": text.title(lang), "title_loc_key": text.title_key}
    if text.title_args:
        fields["title_loc_args"] = json.dumps(list(text.title_args), ensure_ascii=False)
    if text.body_key:
        fields["body"] = text.body(lang)
        fields["loc_key"] = text.body_key
        fields["loc_args"] = json.dumps(list(text.body_args), ensure_ascii=False)
    return fields


def build(device: Device, n: Notification, now: float) -> dict[str, Any]:
    """The `message` object for `n` to `device` (send body is {"message": ...})."""
    data = {k: as_string(v) for k, v in n.fields(device.privacy).items()}
    data.update(alert_fields(n, device.privacy, device.locale))
    if isinstance(n, MessageNotification) and not device.privacy:

        def size_of(preview: str, truncated: bool) -> int:
            data["preview"] = preview
            data["truncated"] = as_string(truncated)
            return data_size(data)

        preview, truncated = fit(n.body, size_of, DATA_LIMIT)
        data["preview"], data["truncated"] = preview, as_string(truncated)
    if data_size(data) > DATA_LIMIT:  # cannot happen: network fields are clipped
        raise ValueError(f"FCM data of {data_size(data)} bytes over {DATA_LIMIT}")
    ttl = max(0, int(n.deadline - now))
    return {
        "token": device.push_token,
        "data": data,
        "android": {
            # Every kind leads to something the user sees (call screen, notification,
            # a ringing screen taken down), and NORMAL may wait for a maintenance
            # window under Doze.
            "priority": "HIGH",
            # A call push arriving after the park expired must not ring.
            "ttl": f"{ttl}s",
            # Offline devices get only the newest push per key (call → missed call).
            "collapse_key": n.collapse(device.privacy),
        },
    }


def dumps(message: dict[str, Any]) -> bytes:
    return json.dumps({"message": message}, ensure_ascii=False, separators=(",", ":")).encode()
