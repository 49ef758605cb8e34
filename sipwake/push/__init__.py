"""Push delivery: notifications → Apple APNs / Google FCM requests, retries, token hygiene.

Callers (calls, messages, voicemail) build a notification and hand it to
`PushService.send(device, notification)`.
"""

from sipwake.push.apns import APNsProvider, APNsSettings
from sipwake.push.fcm import FCMProvider, FCMSettings
from sipwake.push.notification import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    MissedCallNotification,
    Notification,
    VoicemailNotification,
)
from sipwake.push.provider import Outcome
from sipwake.push.service import PushLog, PushResult, PushService, RetryPolicy
from sipwake.push.sink import PushSink

__all__ = [
    "APNsProvider",
    "APNsSettings",
    "CallCancelledNotification",
    "CallNotification",
    "FCMProvider",
    "FCMSettings",
    "MessageNotification",
    "MissedCallNotification",
    "Notification",
    "Outcome",
    "PushLog",
    "PushResult",
    "PushService",
    "PushSink",
    "RetryPolicy",
    "VoicemailNotification",
]
