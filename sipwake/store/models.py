"""Records kept by the store. Plain dataclasses: every layer may read them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class User:
    """A provisioned SIP user. Only digest HA1 hashes are kept, never the password."""

    username: str
    domain: str
    ha1_md5: str  # md5(username:realm:password), realm == domain
    ha1_sha256: str  # sha256(username:realm:password)
    created_at: float = 0.0

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.domain}"


@dataclass(slots=True)
class Binding:
    """One registered contact of an address-of-record (RFC 3261 §10)."""

    aor: str  # "sip:alice@example.com"
    key: str  # +sip.instance, else pn-prid, else contact URI
    contact: str  # contact URI as registered, pn-* parameters included
    expires_at: float  # unix seconds
    call_id: str
    cseq: int
    q: float = 1.0
    received: str = ""  # where the REGISTER came from, "udp:1.2.3.4:5060"
    flow: str = ""  # connection id for TCP/TLS/WS flows (RFC 5626), "" for UDP
    instance: str = ""  # +sip.instance without the angle brackets
    device_id: str = ""  # Device.device_id when the contact carried push params
    user_agent: str = ""
    path: tuple[str, ...] = ()  # RFC 3327 Path header values
    updated_at: float = 0.0
    # cluster: the node holding it ("tcp:host:port", its internal address), "" alone
    node: str = ""
    # memory only, not a column: when the store's copy of it lapses (0: none written).
    # A refresh that moves nothing but the expiry leaves the copy while it covers half
    # the new lifetime (registrar.py, `store_write_due`)
    stored_until: float = field(default=0.0, compare=False)


@dataclass(slots=True)
class Device:
    """A push-capable device of a user. Outlives its SIP bindings."""

    device_id: str
    aor: str
    provider: str  # "apns" | "fcm"
    platform: str  # "ios" | "android"
    push_token: str = ""  # APNs alert token, or FCM registration token
    voip_token: str = ""  # APNs PushKit token
    topic: str = ""  # APNs bundle id, or FCM project id
    team_id: str = ""
    pn_param: str = ""  # raw RFC 8599 pn-param
    instance: str = ""
    sandbox: bool = False
    call_mode: str = "voip"  # "voip" | "alert"
    ringtone: str = ""
    locale: str = ""
    privacy: bool = False
    enabled: bool = True
    disabled_reason: str = ""
    token_updated_at: float = 0.0  # when the token was last uploaded
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(slots=True)
class PushAttempt:
    """One request to a push provider and what came of it (the push log)."""

    device_id: str
    kind: str  # notification type: call, call_cancelled, missed_call, message, voicemail
    provider: str  # "apns" | "fcm" | "sink"
    push_id: str  # apns-id, or the id we gave the FCM message
    attempt: int  # 1 for the first try
    status: int  # HTTP status; 0 when no response came (connection error, timeout)
    outcome: str  # "delivered" | "retry" | "invalid_token" | "failed" | "expired"
    reason: str = ""  # provider's reason string, e.g. "BadDeviceToken"
    latency_ms: float = 0.0
    at: float = 0.0


@dataclass(slots=True)
class OutboxPush:
    """A push accepted for sending whose time to live outlives a process (message,
    missed call, voicemail), kept until it is delivered, refused for good or expired,
    so that a restart resumes it (the push outbox)."""

    push_id: str  # our id for the push (the apns-id of its first request)
    device_id: str
    kind: str  # notification type
    notification: str  # the notification's fields, JSON (push/notification.py to_json)
    deadline: float  # unix seconds: no attempt starts after it
    created_at: float = 0.0
    node: str = ""  # the cluster node retrying it ("" alone); another adopts it if it dies


@dataclass(slots=True)
class CallRecord:
    """One call to a local user in the call log (parked, rung, answered or missed)."""

    call_id: str  # the park id, as in the call push
    aor: str  # the callee
    caller_uri: str
    caller_number: str
    caller_name: str
    started_at: float
    ended_at: float = 0.0
    answered: bool = False
    missed: bool = False
    reason: str = ""  # "answered", "cancelled", "timeout", "declined", "busy", ...
    answered_by: str = ""  # device id or binding key that took the call


@dataclass(slots=True)
class InboxMessage:
    """One instant message in a user's inbox (store-and-forward, RFC 3428 MESSAGE)."""

    id: int  # server id: ascending in arrival order, never reused (0 until stored)
    aor: str  # the recipient
    dedup_key: str  # digest of sender + IMDN Message-ID (or Call-ID + CSeq): unique per aor
    from_uri: str  # the sender, as shown on the push
    from_name: str
    content_type: str  # the SIP Content-Type as received ("message/cpim", "text/plain;...")
    body: bytes  # as received: delivered byte-identical
    content_encoding: str = ""  # "gzip" | "deflate" | "": the body is kept encoded
    imdn_id: str = ""  # RFC 5438 Message-ID from the CPIM envelope
    silent: bool = False  # a delivery report (IMDN): delivered, never pushed, not unread
    received_at: float = 0.0
    delivered_at: float = 0.0  # first 2xx from any device, or acknowledged over HTTP
    acked_at: float = 0.0  # acknowledged over HTTP: not delivered over SIP any more


@dataclass(slots=True)
class Mailbox:
    """A user's voicemail state (RFC 3842 message summary) as last reported by the
    voicemail system, over SIP NOTIFY or the webhook."""

    aor: str
    waiting: bool = False  # Messages-Waiting
    account: str = ""  # Message-Account URI, as the voicemail system gave it
    new_count: int = 0  # Voice-Message: new/old (urgent_new/urgent_old)
    old_count: int = 0
    urgent_new: int = 0
    urgent_old: int = 0
    last_from_uri: str = ""  # who left the newest voicemail, when the source said
    last_from_name: str = ""
    last_duration: int = 0  # seconds
    last_at: float = 0.0  # when the new count last rose
    updated_at: float = 0.0
