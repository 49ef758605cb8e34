"""What an app is told when it is woken: one typed notification per event.

Field names and meanings are the payload contract in DESIGN.md ("Push payloads").
A notification knows nothing about APNs or FCM; `apns_payload` and `fcm_payload`
turn it into a provider request. Values keep their APNs types here (ints, bools);
the FCM builder turns them into strings.

Every notification has a `deadline` (unix seconds): no send attempt starts after it
and providers are told to drop the push once it has passed. For a call that is the
park expiry (a late call push must not ring).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import ClassVar

from sipwake.push.truncate import clip, scrub

Value = str | int | bool
Fields = dict[str, Value]

# Byte caps for fields that come from the network (SIP display names, URIs), so
# the fixed part of any payload stays well under 4096 bytes and the message
# preview keeps its room.
MAX_NAME_BYTES = 256
MAX_NUMBER_BYTES = 64
MAX_URI_BYTES = 512
MAX_ID_BYTES = 256
MAX_COLLAPSE_ID_BYTES = 64  # APNs limit for apns-collapse-id

# How long a push stays worth delivering when the caller gives no deadline.
DEFAULT_TTL: dict[str, float] = {
    "call_cancelled": 60.0,  # only matters while something still rings
    "missed_call": 24 * 3600.0,
    "message": 24 * 3600.0,
    "voicemail": 24 * 3600.0,
}

CANCEL_REASONS = frozenset({"answered_elsewhere", "declined"})


def collapse_id(key: str) -> str:
    """`key` if it fits APNs' 64-byte collapse id, else a stable 64-hex-char digest."""
    if len(key.encode()) <= MAX_COLLAPSE_ID_BYTES:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """Base of the five notification types. Not sent as such."""

    kind: ClassVar[str] = ""
    # Badge to show on the app icon (unread messages + new voicemails), or None
    # to leave it alone. Only user-visible alerts carry it.
    badge: int | None = None
    deadline: float = 0.0

    @property
    def collapse_key(self) -> str:
        """Pushes with the same key replace each other on the device (<= 64 bytes)."""
        raise NotImplementedError

    def collapse(self, privacy: bool) -> str:
        """The collapse key as sent: in privacy mode it must not reveal who wrote."""
        return self.collapse_key

    def fields(self, privacy: bool) -> Fields:
        """The payload fields, `type` included. Privacy: only ids, counts and times."""
        raise NotImplementedError

    def _init(self, default_deadline: float) -> None:
        # Frozen dataclass: defaults that depend on other fields are set here.
        if self.deadline <= 0:
            object.__setattr__(self, "deadline", default_deadline)
        if self.badge is not None:
            _count(self.badge, "badge")


def _clip_fields(obj: object, caps: dict[str, int]) -> None:
    for name, cap in caps.items():
        object.__setattr__(obj, name, clip(getattr(obj, name), cap))


@dataclass(frozen=True, slots=True, kw_only=True)
class CallNotification(Notification):
    """Incoming call parked for a sleeping user. Deadline = park expiry."""

    kind: ClassVar[str] = "call"
    call_id: str  # park id
    caller_uri: str
    caller_number: str
    caller_name: str
    pickup_uri: str
    expires_at: int  # unix seconds when the park gives up

    def __post_init__(self) -> None:
        _clip_fields(self, {"call_id": MAX_ID_BYTES, "caller_uri": MAX_URI_BYTES,
                            "caller_number": MAX_NUMBER_BYTES, "caller_name": MAX_NAME_BYTES,
                            "pickup_uri": MAX_URI_BYTES})
        _count(self.expires_at, "expires_at")
        self._init(float(self.expires_at))

    @property
    def collapse_key(self) -> str:
        return collapse_id(self.call_id)

    def fields(self, privacy: bool) -> Fields:
        return {
            "type": self.kind,
            "call_id": self.call_id,
            "caller_uri": "" if privacy else self.caller_uri,
            "caller_number": "" if privacy else self.caller_number,
            "caller_name": "" if privacy else self.caller_name,
            "pickup_uri": self.pickup_uri,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCancelledNotification(Notification):
    """A call that was pushed stopped ringing: answered on another device or declined."""

    kind: ClassVar[str] = "call_cancelled"
    call_id: str
    reason: str  # "answered_elsewhere" | "declined"

    def __post_init__(self) -> None:
        if self.reason not in CANCEL_REASONS:
            raise ValueError(f"reason must be one of {sorted(CANCEL_REASONS)}, got {self.reason!r}")
        _clip_fields(self, {"call_id": MAX_ID_BYTES})
        self._init(time.time() + DEFAULT_TTL[self.kind])

    @property
    def collapse_key(self) -> str:
        return collapse_id(self.call_id)  # replaces the ringing call alert

    def fields(self, privacy: bool) -> Fields:
        return {"type": self.kind, "call_id": self.call_id, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class MissedCallNotification(Notification):
    kind: ClassVar[str] = "missed_call"
    call_id: str
    caller_uri: str
    caller_number: str
    caller_name: str
    at: int  # unix seconds the call came in

    def __post_init__(self) -> None:
        _clip_fields(self, {"call_id": MAX_ID_BYTES, "caller_uri": MAX_URI_BYTES,
                            "caller_number": MAX_NUMBER_BYTES, "caller_name": MAX_NAME_BYTES})
        _count(self.at, "at")
        self._init(time.time() + DEFAULT_TTL[self.kind])

    @property
    def collapse_key(self) -> str:
        return collapse_id(self.call_id)  # replaces the ringing call alert

    def fields(self, privacy: bool) -> Fields:
        return {
            "type": self.kind,
            "call_id": self.call_id,
            "caller_uri": "" if privacy else self.caller_uri,
            "caller_number": "" if privacy else self.caller_number,
            "caller_name": "" if privacy else self.caller_name,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageNotification(Notification):
    """A stored instant message. `body` is the full text: each provider's builder
    cuts the `preview` to what fits its payload limit."""

    kind: ClassVar[str] = "message"
    message_id: str
    from_uri: str
    from_number: str
    from_name: str
    body: str
    unread: int
    # Messages of one conversation replace each other's notification; the
    # sender's URI when not given.
    conversation: str = field(default="")

    def __post_init__(self) -> None:
        _clip_fields(self, {"message_id": MAX_ID_BYTES, "from_uri": MAX_URI_BYTES,
                            "from_number": MAX_NUMBER_BYTES, "from_name": MAX_NAME_BYTES})
        object.__setattr__(self, "body", scrub(self.body))
        object.__setattr__(self, "conversation",
                           clip(self.conversation or self.from_uri, MAX_ID_BYTES))
        _count(self.unread, "unread")
        self._init(time.time() + DEFAULT_TTL[self.kind])

    @property
    def collapse_key(self) -> str:
        return collapse_id(self.conversation)

    def collapse(self, privacy: bool) -> str:
        if privacy:  # the conversation is the sender's URI: send a digest instead
            return hashlib.sha256(b"conversation:" + self.conversation.encode()).hexdigest()
        return self.collapse_key

    def fields(self, privacy: bool) -> Fields:
        """Fields with the full body as `preview` (not truncated): builders cut it."""
        return {
            "type": self.kind,
            "message_id": self.message_id,
            "from_uri": "" if privacy else self.from_uri,
            "from_number": "" if privacy else self.from_number,
            "from_name": "" if privacy else self.from_name,
            "preview": "" if privacy else self.body,
            "truncated": False,
            "unread": self.unread,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class VoicemailNotification(Notification):
    kind: ClassVar[str] = "voicemail"
    from_uri: str
    from_name: str
    duration: int  # seconds
    new: int
    old: int

    def __post_init__(self) -> None:
        _clip_fields(self, {"from_uri": MAX_URI_BYTES, "from_name": MAX_NAME_BYTES})
        for name in ("duration", "new", "old"):
            _count(getattr(self, name), name)
        self._init(time.time() + DEFAULT_TTL[self.kind])

    @property
    def collapse_key(self) -> str:
        return "voicemail"  # counts are cumulative: the newest says it all

    def fields(self, privacy: bool) -> Fields:
        return {
            "type": self.kind,
            "from_uri": "" if privacy else self.from_uri,
            "from_name": "" if privacy else self.from_name,
            "duration": self.duration,
            "new": self.new,
            "old": self.old,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TestNotification(Notification):
    """`sipwake push test`: proves that pushes reach the device. Not one of the events
    (not in KINDS: never kept in the outbox); an app may show it or ignore it."""

    kind: ClassVar[str] = "test"
    sent_at: int  # unix seconds

    def __post_init__(self) -> None:
        _count(self.sent_at, "sent_at")
        self._init(self.sent_at + 60.0)  # worth delivering for a minute only

    @property
    def collapse_key(self) -> str:
        return "test"

    def fields(self, privacy: bool) -> Fields:
        return {"type": self.kind, "sent_at": self.sent_at}


KINDS: dict[str, type[Notification]] = {
    cls.kind: cls
    for cls in (CallNotification, CallCancelledNotification, MissedCallNotification,
                MessageNotification, VoicemailNotification)
}


def to_json(notification: Notification) -> str:
    """The notification's fields as JSON text (what the push outbox stores)."""
    return json.dumps({f.name: getattr(notification, f.name)
                       for f in dataclasses.fields(notification)}, separators=(",", ":"))


def from_json(kind: str, text: str) -> Notification:
    """The notification `to_json` wrote. Raises ValueError (or TypeError) when `text`
    is not one of `kind`."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown notification kind {kind!r}")
    values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError("a notification is a JSON object")
    return cls(**values)
