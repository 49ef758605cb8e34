"""`sipwake push test USER`: one test push to each of a user's devices, straight through
its provider, and exactly what the provider answered — the first thing to look at when
an app developer says pushes "don't arrive".

Unlike PushService, a probe makes one request per device (plus one more when the
provider refuses our credential as expired), never retries later, and never disables
a device whose token is refused: it reports. Disabled devices are tried too (the
answer says whether the token works again). Each request is written to the push log
(kind `test`) so that it shows where the server's own pushes show.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sipwake.push.notification import Notification
from sipwake.push.provider import (
    DELIVERED,
    FAILED,
    INVALID_TOKEN,
    REAUTH,
    SKIPPED,
    AttemptResult,
    InvalidDeviceToken,
    Outcome,
    PreparedPush,
    Provider,
    SkipPush,
)
from sipwake.store.errors import log_failure
from sipwake.store.models import Device, PushAttempt

log = logging.getLogger("sipwake.push")

TIMEOUT = 10.0  # seconds one device's request may take


class ProbeLog(Protocol):
    async def add_push_attempt(self, attempt: PushAttempt) -> None: ...


def mask(token: str) -> str:
    """A token as an operator may see it: enough to tell two apart, not to use one."""
    if len(token) <= 12:
        return "…" + token[-2:] if token else ""
    return f"{token[:6]}…{token[-4:]}"


@dataclass(slots=True)
class Probe:
    """What one device's test push came to."""

    device: Device
    provider: str  # "apns" | "fcm", or "" when no provider serves this device
    push_type: str = ""  # APNs "voip" / "alert"; FCM "data"
    token: str = ""  # masked
    outcome: Outcome = SKIPPED
    status: int = 0  # HTTP status, 0 when no response came
    reason: str = ""  # provider's reason, or why no request was made
    answer_id: str = ""  # apns-id / FCM message name
    push_id: str = ""  # the apns-id we sent / our id of the FCM message
    latency_ms: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.outcome == DELIVERED


async def probe(
    devices: Sequence[Device],
    providers: Mapping[str, Provider],
    notification: Callable[[Device], Notification],
    push_log: ProbeLog | None = None,
    *,
    per_device: float = TIMEOUT,
    clock: Callable[[], float] = time.time,
) -> list[Probe]:
    """A test push to each device at once; results in the devices' order."""
    return list(await asyncio.gather(*(
        _one(d, providers, notification(d), push_log, per_device, clock) for d in devices
    )))  # fmt: skip


async def _one(device: Device, providers: Mapping[str, Provider], n: Notification,
               push_log: ProbeLog | None, per_device: float,
               clock: Callable[[], float]) -> Probe:
    provider = providers.get(device.provider)
    if provider is None:
        return Probe(device, "", reason=f"no {device.provider or 'push'} provider configured")
    result = Probe(device, provider.name)
    try:
        push = provider.prepare(device, n, clock())
    except SkipPush as exc:
        result.reason = str(exc)
        return result
    except (InvalidDeviceToken, ValueError) as exc:
        result.outcome, result.reason = INVALID_TOKEN, str(exc)
        return result
    result.push_id = push.push_id
    result.push_type, token = _route(push)
    result.token = mask(token)
    started = time.perf_counter()
    answer = await _attempt(provider, push, per_device)
    if answer.outcome == REAUTH:  # an expired credential: renewed once, as the service does
        await provider.reauthorize(answer.credential)
        answer = await _attempt(provider, push, per_device)
    result.latency_ms = (time.perf_counter() - started) * 1000.0
    result.status, result.reason, result.answer_id = answer.status, answer.reason, answer.answer_id
    # one request, no later retry: what the service would retry has failed here
    result.outcome = answer.outcome if answer.outcome in (DELIVERED, INVALID_TOKEN) else FAILED
    if push_log is not None:
        row = PushAttempt(device.device_id, n.kind, provider.name, push.push_id, 1,
                          result.status, result.outcome, result.reason,
                          round(result.latency_ms, 3), clock())
        try:
            await push_log.add_push_attempt(row)
        except Exception as exc:
            log_failure(log, exc, "push log row of a test push")
    return result


async def _attempt(provider: Provider, push: PreparedPush, time_left: float) -> AttemptResult:
    try:
        return await provider.attempt(push, time_left)
    except Exception as exc:  # a provider's bug is an answer too, here
        return AttemptResult(0, FAILED, f"{type(exc).__name__}: {exc}".rstrip(": "))


def _route(push: PreparedPush) -> tuple[str, str]:
    """(push type, token) of a prepared request."""
    if push.provider == "apns":
        return push.headers.get("apns-push-type", ""), push.headers[":path"].rsplit("/", 1)[-1]
    return "data", str(push.payload.get("token", ""))
