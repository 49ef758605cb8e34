"""PushService: one notification to one device, through the right provider.

Owns what is common to every provider: skipping disabled devices, retrying
transient failures with jittered exponential backoff (Retry-After honoured,
never past the notification's deadline), renewing a refused credential once,
disabling devices whose token the provider rejects, and recording every attempt
in the push log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sipwake.push.notification import Notification
from sipwake.push.provider import (
    DELIVERED,
    EXPIRED,
    FAILED,
    INVALID_TOKEN,
    REAUTH,
    RETRY,
    SKIPPED,
    AttemptResult,
    InvalidDeviceToken,
    PreparedPush,
    Provider,
    SkipPush,
)
from sipwake.push.sink import PushSink
from sipwake.push.truncate import PayloadTooLarge
from sipwake.store.models import Device, PushAttempt

log = logging.getLogger("sipwake.push")


class PushLog(Protocol):
    """The part of the Store the push service uses."""

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool: ...

    async def add_push_attempt(self, attempt: PushAttempt) -> None: ...


@dataclass(slots=True)
class PushResult:
    device_id: str
    kind: str
    provider: str  # "apns" | "fcm" | "sink" | "" (no provider for this device)
    outcome: str  # delivered | invalid_token | failed | expired | skipped
    status: int = 0  # last HTTP status, 0 if none
    reason: str = ""
    attempts: int = 0  # requests made
    push_id: str = ""
    disabled: bool = False  # the device was disabled because of this push

    @property
    def delivered(self) -> bool:
        return self.outcome == DELIVERED


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_delay: float = 0.5
    max_delay: float = 60.0
    max_attempts: int = 8

    def delay(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """Wait before attempt `attempt + 1`: exponential, jittered in [50 %, 100 %]
        so that devices failing together do not retry together; never shorter than
        the provider's Retry-After."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1)) * (0.5 + rand / 2)
        return max(delay, retry_after or 0.0)


class PushService:
    def __init__(
        self,
        store: PushLog,
        *,
        apns: Provider | None = None,
        fcm: Provider | None = None,
        sink: PushSink | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        # A sink given explicitly receives every push, providers or not.
        self._providers: dict[str, Provider] = {}
        if apns is not None:
            self._providers["apns"] = apns
        if fcm is not None:
            self._providers["fcm"] = fcm
        # Without any provider configured, pushes go to the developer sink.
        self.sink = sink if sink is not None else (None if self._providers else PushSink())
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        # called the moment a provider accepts a push: (notification, perf_counter when
        # the request left, or was handed to the provider; perf_counter of the answer)
        self.on_accepted: Callable[[Notification, float, float], None] | None = None

    async def send(self, device: Device, notification: Notification) -> PushResult:
        """Deliver `notification` to `device`, retrying until it is delivered, refused
        for good, or its deadline passes. Never raises for provider errors.

        When the provider rejects the token, the device is disabled in the store
        (and `device.enabled` set to False) unless its token was re-uploaded since.
        """
        kind = notification.kind
        provider: Provider | None = self.sink or self._providers.get(device.provider)
        if provider is None:
            reason = f"no {device.provider or 'push'} provider configured"
            return await self._skip(device, kind, "", reason)
        if not device.enabled:
            return await self._skip(device, kind, provider.name, "device disabled")
        now = self._clock()
        if now >= notification.deadline:
            return await self._finish(device, kind, provider.name, "", 0, 0, EXPIRED,
                                      "deadline passed before sending", 0.0)
        try:
            push = provider.prepare(device, notification, now)
        except SkipPush as exc:
            return await self._skip(device, kind, provider.name, str(exc))
        except InvalidDeviceToken as exc:
            return await self._invalid(device, kind, provider.name, "", 0, 0, str(exc), None, 0.0)
        except (PayloadTooLarge, ValueError) as exc:
            log.error("cannot encode %s push for device %s: %s", kind, device.device_id, exc)
            return await self._finish(device, kind, provider.name, "", 0, 0, FAILED, str(exc), 0.0)
        return await self._deliver(device, notification, provider, push)

    async def send_all(
        self, devices: Iterable[Device], notification: Notification
    ) -> list[PushResult]:
        """`send` to several devices concurrently; results in the same order."""
        return list(await asyncio.gather(*(self.send(d, notification) for d in devices)))

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()

    async def _deliver(
        self, device: Device, n: Notification, provider: Provider, push: PreparedPush
    ) -> PushResult:
        attempt = 0
        renewed = False
        while True:
            if attempt and self._clock() >= n.deadline:
                # No attempt starts after the deadline (a sleep that overran, a slow
                # request before an immediate retry).
                expired = await self._finish(device, n.kind, provider.name, push.push_id, 0, 0,
                                             EXPIRED, "deadline passed before the next attempt",
                                             0.0)
                expired.attempts = attempt
                return expired
            attempt += 1
            started = time.perf_counter()
            try:  # one deadline per attempt: the provider's request timeout, or less
                result = await provider.attempt(push, max(0.001, n.deadline - self._clock()))
            except Exception as exc:  # a provider's bug must not lose the push
                log.exception("%s provider failed on a %s push", provider.name, n.kind)
                result = AttemptResult(0, RETRY, f"{type(exc).__name__}: {exc}".rstrip(": "))
            answered_at = time.perf_counter()
            latency = (answered_at - started) * 1000.0
            outcome = result.outcome
            args = (device, n.kind, provider.name, push.push_id, attempt, result.status)
            if outcome == DELIVERED:
                if self.on_accepted is not None:  # now, not after the push log's write
                    self.on_accepted(n, result.sent_at or started, answered_at)
                return await self._finish(*args, DELIVERED, "", latency)
            if outcome == INVALID_TOKEN:
                return await self._invalid(*args, result.reason, result.token_at, latency)
            if outcome == REAUTH and not renewed:
                # The provider says our credential expired: get a new one (once,
                # shared by all requests that saw the same one) and retry at once.
                renewed = True
                await provider.reauthorize(result.credential)
                await self._record(*args, RETRY, result.reason, latency)
                continue
            if outcome != RETRY:  # permanent error, or a fresh credential refused too
                return await self._finish(*args, FAILED, result.reason, latency)
            if attempt >= self._retry.max_attempts:
                return await self._finish(*args, FAILED, result.reason or "too many attempts",
                                          latency)
            delay = self._retry.delay(attempt, result.retry_after, self._rand())
            if self._clock() + delay >= n.deadline:
                # The next attempt would start after the deadline: a call push
                # arriving after the call ended is worse than none.
                return await self._finish(*args, EXPIRED, result.reason, latency)
            await self._record(*args, RETRY, result.reason, latency)
            log.info("%s push to device %s failed (%s %s), retry in %.2fs", n.kind,
                     device.device_id, result.status, result.reason, delay)
            await self._sleep(delay)

    async def _invalid(
        self,
        device: Device,
        kind: str,
        provider: str,
        push_id: str,
        attempt: int,
        status: int,
        reason: str,
        token_at: float | None,
        latency: float,
    ) -> PushResult:
        # APNs 410 carries when the token became invalid: a token uploaded after that
        # is a new one and must be kept. Other rejections are about the token as of now.
        at = token_at if token_at is not None else self._clock()
        try:
            disabled = await self._store.disable_device(device.device_id, reason, at)
        except Exception:
            log.exception("cannot disable device %s", device.device_id)
            disabled = False
        if disabled:
            device.enabled = False
            device.disabled_reason = reason
            log.warning("device %s disabled: %s rejected its token (%s)", device.device_id,
                        provider, reason)
        result = await self._finish(device, kind, provider, push_id, attempt, status,
                                    INVALID_TOKEN, reason, latency)
        result.disabled = disabled
        return result

    async def _skip(self, device: Device, kind: str, provider: str, reason: str) -> PushResult:
        log.info("%s push to device %s skipped: %s", kind, device.device_id, reason)
        return await self._finish(device, kind, provider, "", 0, 0, SKIPPED, reason, 0.0)

    async def _finish(
        self,
        device: Device,
        kind: str,
        provider: str,
        push_id: str,
        attempt: int,
        status: int,
        outcome: str,
        reason: str,
        latency: float,
    ) -> PushResult:
        await self._record(device, kind, provider, push_id, attempt, status, outcome, reason,
                           latency)
        if outcome in (FAILED, EXPIRED):
            log.warning("%s push to device %s %s after %d attempt(s): %s %s", kind,
                        device.device_id, outcome, attempt, status, reason)
        return PushResult(device.device_id, kind, provider, outcome, status, reason, attempt,
                          push_id)

    async def _record(
        self,
        device: Device,
        kind: str,
        provider: str,
        push_id: str,
        attempt: int,
        status: int,
        outcome: str,
        reason: str,
        latency: float,
    ) -> None:
        """One push-log row per request (attempt >= 1), or per skipped push (attempt 0)."""
        try:
            await self._store.add_push_attempt(PushAttempt(
                device_id=device.device_id, kind=kind, provider=provider, push_id=push_id,
                attempt=attempt, status=status, outcome=outcome, reason=reason,
                latency_ms=round(latency, 3), at=self._clock(),
            ))
        except Exception:  # the push log must never stop a push
            log.exception("cannot record push attempt for device %s", device.device_id)

