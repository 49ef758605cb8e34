"""What the push service needs from a provider (APNs, FCM, the dev sink)."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sipwake.push.notification import Notification
from sipwake.store.models import Device


class Outcome(StrEnum):
    """What a push, or one attempt at it, came to. The values are stored in the push
    log (`push_attempts.outcome`) and are the `outcome` label of the push metrics."""

    DELIVERED = "delivered"
    RETRY = "retry"  # this attempt failed, another one follows
    INVALID_TOKEN = "invalid_token"  # the device was disabled (unless re-uploaded meanwhile)
    FAILED = "failed"  # permanent error, or out of attempts
    EXPIRED = "expired"  # the notification's deadline passed before it got through
    SKIPPED = "skipped"  # no request made: device disabled, no usable token, no provider
    # A push waiting in the outbox: resumed after a restart (push log), or left there by
    # a stop (PushResult), to be tried again at the next start.
    QUEUED = "queued"
    # Provider-internal: the provider's auth credential was refused as expired; the
    # service asks for a new one (once) and retries at once.
    REAUTH = "reauth"


# The members under their own names, as `re` and `signal` export theirs: the providers
# and the service compare against them on every push, and on Python 3.11 an
# `Outcome.X` lookup costs ten times a module global's.
DELIVERED = Outcome.DELIVERED
RETRY = Outcome.RETRY
INVALID_TOKEN = Outcome.INVALID_TOKEN
FAILED = Outcome.FAILED
EXPIRED = Outcome.EXPIRED
SKIPPED = Outcome.SKIPPED
QUEUED = Outcome.QUEUED
REAUTH = Outcome.REAUTH


# Kinds worth nothing late (a call rings for seconds): retried before the others when
# both are due, and written to the provider at once (H2Pool.post's `urgent`)
URGENT_KINDS = frozenset({"call", "call_cancelled"})


class SkipPush(Exception):
    """This device cannot receive this notification (e.g. it has no alert token)."""


class InvalidDeviceToken(Exception):
    """The stored token cannot be a device token; the device should be disabled."""


@dataclass(slots=True)
class PreparedPush:
    """One notification for one device, encoded once and reused by every retry."""

    provider: str  # "apns" | "fcm"
    device_id: str
    kind: str
    push_id: str  # apns-id (sent), or our own id for an FCM message (logged)
    headers: dict[str, str]  # provider headers, credentials left out
    payload: dict[str, Any]  # what the app receives (APNs payload / FCM message)
    body: bytes  # exact bytes sent
    sandbox: bool = False
    wire: Any = field(default=None, repr=False)  # provider-specific precomputed request

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "device_id": self.device_id,
            "type": self.kind,
            "push_id": self.push_id,
            "sandbox": self.sandbox,
            "headers": dict(self.headers),
            "payload": self.payload,
        }


@dataclass(slots=True)
class AttemptResult:
    """What one request to the provider came to."""

    status: int  # HTTP status, 0 when no response arrived
    outcome: Outcome  # DELIVERED, RETRY, INVALID_TOKEN, FAILED or REAUTH
    reason: str = ""
    retry_after: float | None = None  # seconds the provider asked us to wait
    token_at: float | None = None  # when the provider learnt the token was invalid (unix s)
    credential: object = None  # auth credential the request carried (for reauthorize)
    sent_at: float = 0.0  # perf_counter when the request left, where the transport knows
    # the provider's name for an accepted push: the apns-id APNs answered with, or the
    # FCM message name ("projects/…/messages/…"); "" when it gave none
    answer_id: str = ""


class Provider(Protocol):
    name: str

    def prepare(
        self, device: Device, notification: Notification, now: float, push_id: str = ""
    ) -> PreparedPush:
        """Encode the request (again for a retry: what depends on `now`, FCM's ttl, is
        fresh; `push_id` keeps the first preparation's id). Raises SkipPush or
        InvalidDeviceToken."""

    async def attempt(
        self, push: PreparedPush, time_left: float | None = None
    ) -> AttemptResult:
        """Send once, giving up after `time_left` seconds (at most the provider's own
        request timeout): the deadline covers waiting for a credential, a connection
        and the answer. Never raises for network, transport or HTTP errors: they
        become results (RETRY unless the provider's answer says otherwise)."""

    async def reauthorize(self, stale: object) -> None:
        """Replace the credential `stale` (unless already replaced)."""

    async def close(self) -> None: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
