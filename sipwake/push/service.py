"""PushService: one notification to one device, through the right provider.

Owns what is common to every provider (the policy; providers are the mechanism,
see provider.py): skipping disabled devices, one deadline per attempt, retrying
transient failures with jittered exponential backoff (Retry-After honoured, never
past the notification's deadline), renewing a refused credential once, disabling
devices whose token the provider rejects, and recording every attempt in the push
log.

A push accepted for sending is never dropped because attempts failed: it is
retried until it is delivered, refused for good, or its deadline (time to live)
passes. The first attempt goes out at once from the caller's task; a push that must
wait for another attempt joins the retry queue (the outbox), where one worker
starts retries when they are due, at most `drain_concurrency` at a time and
`drain_rate` a second per provider, call pushes first, so that a provider coming
back after an outage gets its backlog at a bounded rate rather than all at once.

Kinds whose time to live outlives the process (message, missed call, voicemail:
24 h) are also written to the store's outbox table before their first attempt and
deleted once done; `start()` resumes what a previous process left there. Call and
call-cancelled pushes stay in memory (a call does not outlive the process, and the
first call push must not wait for a store write).

`send()` returns when the push is done (a retried push: when its last attempt is);
a caller that gives up (cancelled) leaves the push to the queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sipwake.push.notification import Notification, from_json, to_json
from sipwake.push.provider import (
    DELIVERED,
    EXPIRED,
    FAILED,
    INVALID_TOKEN,
    QUEUED,
    REAUTH,
    RETRY,
    SKIPPED,
    URGENT_KINDS,
    AttemptResult,
    InvalidDeviceToken,
    Outcome,
    PreparedPush,
    Provider,
    SkipPush,
)
from sipwake.push.sink import PushSink
from sipwake.push.truncate import PayloadTooLarge
from sipwake.store.errors import log_failure
from sipwake.store.models import Device, OutboxPush, PushAttempt
from sipwake.timeline import NO_TRACE, Trace

log = logging.getLogger("sipwake.push")

# Kinds kept in the store until done: their time to live (24 h) outlives a process.
DURABLE_KINDS = frozenset({"message", "missed_call", "voicemail"})
STORE_WAIT = 2.0  # seconds a push waits for its outbox row before going out anyway
DELETE_RETRIES = (1.0, 5.0, 30.0)  # seconds between tries to forget a done push
MIN_NAP = 0.001  # the retry queue's worker never sleeps less (seconds)


class PushLog(Protocol):
    """The part of the Store the push service uses."""

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool: ...

    async def add_push_attempt(self, attempt: PushAttempt) -> None: ...


class OutboxStore(Protocol):
    """The part of the Store the outbox uses (durable kinds, resumed at start)."""

    async def add_outbox_push(self, push: OutboxPush) -> None: ...

    async def delete_outbox_push(self, push_id: str) -> None: ...

    async def outbox_pushes(self, node: str = "") -> list[OutboxPush]: ...

    async def outbox_nodes(self) -> list[str]: ...

    async def adopt_outbox(self, node: str, from_node: str) -> int: ...

    async def get_device(self, device_id: str) -> Device | None: ...


class PushObserver(Protocol):
    """Where the service reports what happens (metrics.py's Metrics is one)."""

    def push_attempt(self, provider: str, kind: str, outcome: str) -> None:
        """One push-log row: an attempt's outcome, or a push skipped or resumed."""

    def push_outbox(self, provider: str, kind: str, change: int) -> None:
        """Pushes waiting for another attempt went up or down by `change`."""


@dataclass(slots=True)
class PushResult:
    device_id: str
    kind: str
    provider: str  # "apns" | "fcm" | "sink" | "" (no provider for this device)
    # delivered | invalid_token | failed | expired | skipped, or queued: the service
    # stopped first and the push waits in the store's outbox for the next start
    outcome: Outcome
    status: int = 0  # last HTTP status, 0 if none
    reason: str = ""
    attempts: int = 0  # requests made
    push_id: str = ""
    disabled: bool = False  # the device was disabled because of this push

    @property
    def delivered(self) -> bool:
        return self.outcome == DELIVERED


@dataclass(slots=True)
class Attempt:
    """A row of the push log in the making: one request and what came of it (attempt
    >= 1), or a push skipped, expired before a request, or resumed (attempt 0). The
    last one of a push is also what its sender hears (`result()`)."""

    device: Device
    kind: str
    provider: str  # "apns" | "fcm" | "sink" | "" (no provider for this device)
    outcome: Outcome
    status: int = 0  # HTTP status, 0 if none
    reason: str = ""
    attempt: int = 0  # requests made for the push so far, this one included
    push_id: str = ""
    latency: float = 0.0  # milliseconds the request took
    note: Notification | None = None  # what was pushed: its call or message (timeline)

    def result(self) -> PushResult:
        return PushResult(self.device.device_id, self.kind, self.provider, self.outcome,
                          self.status, self.reason, self.attempt, self.push_id)

    def row(self, at: float) -> PushAttempt:
        return PushAttempt(
            device_id=self.device.device_id, kind=self.kind, provider=self.provider,
            push_id=self.push_id, attempt=self.attempt, status=self.status,
            outcome=self.outcome, reason=self.reason, latency_ms=round(self.latency, 3),
            at=at,
        )


@dataclass(slots=True)
class ProviderHealth:
    """What the push log says of one provider since the start (the admin page)."""

    delivered: int = 0
    errors: int = 0  # attempts that failed: retried, refused, expired
    last_success_at: float = 0.0
    last_error_at: float = 0.0
    last_error: str = ""

    def count(self, a: Attempt, now: float) -> None:
        if a.outcome == DELIVERED:
            self.delivered += 1
            self.last_success_at = now
        elif a.outcome in (RETRY, FAILED, INVALID_TOKEN, EXPIRED):
            self.errors += 1
            self.last_error_at = now
            self.last_error = f"{a.status or ''} {a.reason}".strip() or str(a.outcome)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_delay: float = 0.5
    max_delay: float = 60.0
    max_attempts: int = 0  # 0: no cap, the notification's deadline decides
    drain_concurrency: int = 50  # retries in flight at once, per provider
    drain_rate: float = 100.0  # retries started per second, per provider (0: no limit)

    def delay(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """Wait before attempt `attempt + 1`: exponential, jittered in [50 %, 100 %]
        so that devices failing together do not retry together; never shorter than
        the provider's Retry-After."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        return max(delay * (0.5 + rand / 2), retry_after or 0.0)


@dataclass(eq=False, slots=True)
class _Push:
    """One accepted push and where it stands."""

    device: Device
    notification: Notification
    provider: Provider
    push: PreparedPush | None  # None until (re)prepared for the next attempt
    push_id: str
    attempts: int = 0
    renewed: bool = False  # the provider's credential was renewed once for this push
    status: int = 0  # of the last attempt
    reason: str = ""
    stored: asyncio.Future[None] | None = None  # its outbox row's write (durable kinds)
    done: asyncio.Future[PushResult] | None = None  # for the caller, once queued
    queued: bool = False  # counted in the outbox gauge

    def attempt(self, outcome: Outcome, status: int = 0, reason: str = "",
                latency: float = 0.0) -> Attempt:
        """Where the push stands after its latest request (or before any) as a push-log
        record."""
        return Attempt(self.device, self.notification.kind, self.provider.name, outcome,
                       status, reason, self.attempts, self.push_id, latency, self.notification)


@dataclass(slots=True)
class _Lane:
    """One provider's share of the retry queue: due pushes, and its drain limits."""

    ready: list[tuple[int, float, int, _Push]] = field(default_factory=list)
    running: int = 0
    tokens: float = -1.0  # -1: full (set on first use)
    stamp: float = 0.0

    def take(self, now: float, rate: float) -> float:
        """0 when a retry may start now (one token taken), else seconds until one may."""
        if rate <= 0:
            return 0.0
        burst = max(1.0, rate)
        if self.tokens < 0:
            self.tokens, self.stamp = burst, now
        self.tokens = min(burst, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now
        # (a hair short of a token counts as one: a clock's resolution, ~0.2 us for unix
        # seconds, must not leave the worker napping for nothing forever)
        if self.tokens >= 1.0 - 1e-6:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return max(MIN_NAP, (1.0 - self.tokens) / rate)


class PushService:
    def __init__(
        self,
        store: PushLog,
        *,
        apns: Provider | None = None,
        fcm: Provider | None = None,
        sink: PushSink | None = None,
        retry: RetryPolicy | None = None,
        outbox: OutboxStore | None = None,
        observer: PushObserver | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        node: str = "",
    ) -> None:
        self._store = store
        self.node = node  # whose outbox rows these are (a cluster node; "" alone)
        # A sink given explicitly receives every push, providers or not.
        self._providers: dict[str, Provider] = {}
        if apns is not None:
            self._providers["apns"] = apns
        if fcm is not None:
            self._providers["fcm"] = fcm
        # Without any provider configured, pushes go to the developer sink.
        self.sink = sink if sink is not None else (None if self._providers else PushSink())
        self._retry = retry or RetryPolicy()
        self._outbox = outbox
        self._observer = observer
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        # called the moment a provider accepts a push: (notification, perf_counter when
        # the request left, or was handed to the provider; perf_counter of the answer)
        self.on_accepted: Callable[[Notification, float, float], None] | None = None
        # the retry queue
        self._due: list[tuple[float, int, _Push]] = []  # (when, seq, push): a heap
        self._lanes: dict[str, _Lane] = {}
        self._seq = itertools.count()
        self._pending: set[_Push] = set()  # queued or being retried
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # retries, resumes
        self._forgets: set[asyncio.Task[None]] = set()  # outbox deletes: close() waits
        self._closed = False
        self.store_wait = STORE_WAIT
        self.trace: Trace = NO_TRACE  # each attempt, on the push's and its call's timeline
        self._health: dict[str, ProviderHealth] = {}
        self._unsent = itertools.count(1)  # timeline keys of pushes that got no push id

    # -- the API --------------------------------------------------------------------

    async def send(self, device: Device, notification: Notification) -> PushResult:
        """Deliver `notification` to `device`, retrying until it is delivered, refused
        for good, or its deadline passes. Never raises for provider errors.

        When the provider rejects the token, the device is disabled in the store
        (and `device.enabled` set to False) unless its token was re-uploaded since.

        Calls nothing that needs the current task (asyncio.timeout) before its first
        wait, which for a call push is the provider's answer: the calls service starts
        it with Tasks.start, so that the request is written in the caller's turn.
        """
        kind = notification.kind
        provider = self._provider_for(device)
        name = provider.name if provider is not None else ""

        def unsent(outcome: Outcome, reason: str) -> Attempt:  # no request made
            return Attempt(device, kind, name, outcome, reason=reason, note=notification)

        if provider is None:
            reason = f"no {device.provider or 'push'} provider configured"
            return await self._skip(unsent(SKIPPED, reason))
        if not device.enabled:
            return await self._skip(unsent(SKIPPED, "device disabled"))
        now = self._clock()
        if now >= notification.deadline:
            return await self._finish(unsent(EXPIRED, "deadline passed before sending"))
        try:
            push = provider.prepare(device, notification, now)
        except SkipPush as exc:
            return await self._skip(unsent(SKIPPED, str(exc)))
        except InvalidDeviceToken as exc:
            return await self._finish(unsent(INVALID_TOKEN, str(exc)))
        except (PayloadTooLarge, ValueError) as exc:
            log.error("cannot encode %s push for device %s: %s", kind, device.device_id, exc)
            return await self._finish(unsent(FAILED, str(exc)))
        p = _Push(device, notification, provider, push, push.push_id)
        if self._outbox is not None and kind in DURABLE_KINDS and provider is not self.sink:
            await self._keep(p, now)
        result = await self._step(p)
        if result is not None:
            return result
        assert p.done is not None  # queued for another attempt
        # shielded: a caller that gives up leaves the push to the queue
        return await asyncio.shield(p.done)

    async def send_all(
        self, devices: Iterable[Device], notification: Notification
    ) -> list[PushResult]:
        """`send` to several devices concurrently; results in the same order."""
        return list(await asyncio.gather(*(self.send(d, notification) for d in devices)))

    async def start(self) -> None:
        """Resume the pushes a previous process left in the store's outbox. Reads them
        before returning (so that none is confused with a push accepted later); their
        devices are looked up and their attempts made in the background."""
        if self._outbox is None:
            return
        try:
            kept = await self._outbox.outbox_pushes(self.node)
        except Exception as exc:
            log_failure(log, exc, "reading the push outbox (pushes left by the last run are "
                        "not resumed)")
            return
        if kept:
            log.info("resuming %d pushes from the outbox", len(kept))
            self._spawn(self._resume(kept))

    async def outbox_nodes(self) -> list[str]:
        return await self._outbox.outbox_nodes() if self._outbox is not None else []

    async def adopt(self, from_node: str) -> int:
        """A cluster node died with pushes in its outbox: they are ours now (unless
        another node took them first), resumed as at a start."""
        if self._outbox is None or self._closed:
            return 0
        kept = await self._outbox.outbox_pushes(from_node)
        moved = await self._outbox.adopt_outbox(self.node, from_node)
        if moved and kept:
            log.info("adopting %d pushes from the outbox of node %s", len(kept),
                     from_node or "(alone)")  # fmt: skip
            self._spawn(self._resume(kept))
        return moved

    def provider_health(self) -> dict[str, dict[str, str | float | int]]:
        """Per provider: deliveries and errors since the start, the last of each, and
        its credential (JWT / OAuth token) as the provider knows it."""
        out: dict[str, dict[str, str | float | int]] = {}
        names = [*self._providers, *(["sink"] if self.sink is not None else [])]
        for name in dict.fromkeys([*names, *self._health]):
            if not name:
                continue
            health = self._health.get(name, ProviderHealth())
            info: dict[str, str | float | int] = {
                "delivered": health.delivered, "errors": health.errors,
                "last_success_at": health.last_success_at,
                "last_error_at": health.last_error_at, "last_error": health.last_error,
            }  # fmt: skip
            status = getattr(self._providers.get(name), "status", None)
            if callable(status):
                info.update(status())
            out[name] = info
        return out

    @property
    def outbox_size(self) -> int:
        """Pushes waiting for another attempt, or being retried."""
        return len(self._pending)

    async def close(self) -> None:
        """Stop retrying (what the store keeps is resumed at the next start), finish
        forgetting done pushes, close the providers."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
        retries = list(self._tasks)
        for task in retries:
            task.cancel()
        await asyncio.gather(*retries, return_exceptions=True)
        kept = dropped = 0
        for p in list(self._pending):
            kept += p.stored is not None
            dropped += p.stored is None
            self._abandon(p)
        if kept or dropped:
            log.warning("push service stopping: %d pushes kept in the outbox for the next "
                        "start, %d in-memory pushes (calls) dropped", kept, dropped)
        forgets = [t for t in self._forgets if not t.done()]
        if forgets:
            _, late = await asyncio.wait(forgets, timeout=5.0)
            for task in late:
                task.cancel()
        for provider in self._providers.values():
            await provider.close()

    # -- attempts ---------------------------------------------------------------------

    async def _step(self, p: _Push) -> PushResult | None:
        """Attempts until `p` is done (its result) or must wait for a retry (queued,
        None). Never raises for provider errors."""
        while True:
            now = self._clock()
            if p.attempts and now >= p.notification.deadline:
                # No attempt starts after the deadline (a sleep that overran, a slow
                # request before an immediate retry).
                reason = "deadline passed before the next attempt"
                return await self._done(p, p.attempt(EXPIRED, reason=reason))
            result, latency = await self._request(p, now)
            status, reason, outcome = result.status, result.reason, result.outcome
            if outcome == DELIVERED:
                return await self._done(p, p.attempt(DELIVERED, status, "", latency))
            if outcome == INVALID_TOKEN:
                refused = p.attempt(INVALID_TOKEN, status, reason, latency)
                return await self._done(p, refused, result.token_at)
            if outcome == REAUTH and not p.renewed:
                # The provider says our credential expired: get a new one (once,
                # shared by all requests that saw the same one) and retry at once.
                p.renewed = True
                await p.provider.reauthorize(result.credential)
                await self._record(p.attempt(RETRY, status, reason, latency))
                continue
            if outcome != RETRY:  # permanent error, or a fresh credential refused too
                return await self._done(p, p.attempt(FAILED, status, reason, latency))
            return await self._retry_later(p, result, latency)

    async def _request(self, p: _Push, now: float) -> tuple[AttemptResult, float]:
        """One request for `p` and its latency (ms). A delivery is told to `on_accepted`
        at once, before the push log's write."""
        n, provider = p.notification, p.provider
        assert p.push is not None
        p.attempts += 1
        started = time.perf_counter()
        try:
            result = await provider.attempt(p.push, max(0.001, n.deadline - now))
        except Exception as exc:  # a provider's bug must not lose the push
            log.exception("%s provider failed on a %s push", provider.name, n.kind)
            result = AttemptResult(0, RETRY, f"{type(exc).__name__}: {exc}".rstrip(": "))
        answered_at = time.perf_counter()
        p.status, p.reason = result.status, result.reason
        if result.outcome == DELIVERED and self.on_accepted is not None:
            self.on_accepted(n, result.sent_at or started, answered_at)
        return result, (answered_at - started) * 1000.0

    async def _retry_later(self, p: _Push, result: AttemptResult,
                           latency: float) -> PushResult | None:
        """`p`'s request failed and may be sent again: queued for a retry after a
        backoff (None), unless out of attempts or the retry would come too late."""
        status, reason = result.status, result.reason
        if self._retry.max_attempts and p.attempts >= self._retry.max_attempts:
            out = p.attempt(FAILED, status, reason or "too many attempts", latency)
            return await self._done(p, out)
        delay = self._retry.delay(p.attempts, result.retry_after, self._rand())
        if self._clock() + delay >= p.notification.deadline:
            # The next attempt would start after the deadline: a call push
            # arriving after the call ended is worse than none.
            return await self._done(p, p.attempt(EXPIRED, status, reason, latency))
        await self._record(p.attempt(RETRY, status, reason, latency))
        log.info("%s push to device %s failed (%s %s), retry in %.2fs", p.notification.kind,
                 p.device.device_id, status, reason, delay)
        self._queue(p, self._clock() + delay)
        return None

    async def _retry_once(self, p: _Push, lane: _Lane) -> None:
        """One retry from the queue: `p` made ready again (`_refresh`), then `_step`."""
        try:
            ended = await self._refresh(p)
            if ended is not None:
                await self._done(p, ended)
            else:
                await self._step(p)
        except Exception:
            log.exception("retry of a %s push to device %s failed", p.notification.kind,
                          p.device.device_id)
            if not self._closed and p in self._pending and not self._is_queued(p):
                self._queue(p, self._clock() + self._retry.max_delay)
        finally:
            lane.running -= 1
            self._wakeup.set()

    async def _refresh(self, p: _Push) -> Attempt | None:
        """Ready `p` for its retry: the device as it is now, the request prepared again
        (FCM's ttl counts down). Or why the push ends here: its deadline passed, its
        device went, or it cannot be prepared any more."""
        n = p.notification
        if self._clock() >= n.deadline:
            return p.attempt(EXPIRED, p.status, p.reason or "deadline passed in the outbox")
        if self._outbox is not None and n.kind in DURABLE_KINDS:
            device = await self._device_now(p.device)
            if device is None:
                return p.attempt(SKIPPED, reason="device deleted")
            if not device.enabled:
                return p.attempt(SKIPPED, reason="device disabled")
            p.device = device
        try:
            p.push = p.provider.prepare(p.device, n, self._clock(), p.push_id)
        except SkipPush as exc:
            return p.attempt(SKIPPED, reason=str(exc))
        except InvalidDeviceToken as exc:
            return p.attempt(INVALID_TOKEN, reason=str(exc))
        except Exception as exc:  # cannot be encoded any more: nothing to retry
            return p.attempt(FAILED, reason=str(exc))
        return None

    async def _device_now(self, device: Device) -> Device | None:
        """The device as the store has it now: hours may have passed, and its token
        moved to another user's phone, or the device been deleted. As we knew it when
        the store cannot say."""
        assert self._outbox is not None
        try:
            return await self._outbox.get_device(device.device_id)
        except Exception as exc:
            log_failure(log, exc, "reading device %s before a retry (retried with what we "
                        "knew)", device.device_id)
            return device

    # -- the queue ----------------------------------------------------------------------

    def _queue(self, p: _Push, at: float) -> None:
        if p.done is None:
            p.done = asyncio.get_running_loop().create_future()
        if self._closed:
            self._abandon(p)  # kept in the store (durable kinds) for the next start
            return
        if not p.queued:
            p.queued = True
            self._pending.add(p)
            if self._observer is not None:
                self._observer.push_outbox(p.provider.name, p.notification.kind, 1)
        heapq.heappush(self._due, (at, next(self._seq), p))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._run())
        self._wakeup.set()

    def _is_queued(self, p: _Push) -> bool:
        return any(entry[2] is p for entry in self._due) or any(
            entry[3] is p for lane in self._lanes.values() for entry in lane.ready)

    def _unqueue(self, p: _Push) -> None:
        if p.queued:
            p.queued = False
            self._pending.discard(p)
            if self._observer is not None:
                self._observer.push_outbox(p.provider.name, p.notification.kind, -1)

    async def _run(self) -> None:
        """The retry queue's worker: starts retries when due, within each provider's
        drain limits; sleeps until the next is due, a slot frees or a push is queued."""
        while not self._closed:
            self._wakeup.clear()
            now = self._clock()
            self._move_due(now)
            wait = self._start_ready(now)
            if self._due:
                until = self._due[0][0] - now
                wait = until if wait is None else min(wait, until)
            if wait is None:
                await self._wakeup.wait()
            else:
                await self._nap(wait)

    def _move_due(self, now: float) -> None:
        """Retries that are due join their provider's lane, call pushes first."""
        while self._due and self._due[0][0] <= now:
            at, seq, p = heapq.heappop(self._due)
            lane = self._lanes.setdefault(p.provider.name, _Lane())
            urgent = 0 if p.notification.kind in URGENT_KINDS else 1
            heapq.heappush(lane.ready, (urgent, at, seq, p))

    def _start_ready(self, now: float) -> float | None:
        """Start the retries each lane's limits allow now; the seconds until a lane's
        rate lets it start another (None: no lane is held back by its rate)."""
        policy = self._retry
        wait: float | None = None
        for lane in self._lanes.values():
            while lane.ready and lane.running < policy.drain_concurrency:
                hold = lane.take(now, policy.drain_rate)
                if hold > 0:
                    wait = hold if wait is None else min(wait, hold)
                    break
                p = heapq.heappop(lane.ready)[3]
                lane.running += 1
                self._spawn(self._retry_once(p, lane))
        return wait

    async def _nap(self, seconds: float) -> None:
        """The injected sleep, cut short when the queue changes."""
        nap = asyncio.ensure_future(self._sleep(seconds))
        woken = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait((nap, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            woken.cancel()

    def _spawn(self, coro: Awaitable[None], forgets: bool = False) -> None:
        task = asyncio.ensure_future(coro)
        tasks = self._forgets if forgets else self._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # -- the store's outbox -------------------------------------------------------------

    async def _keep(self, p: _Push, now: float) -> None:
        """Write the push's outbox row before its first attempt (committed: it survives
        a crash from here on). A store that is down or slow does not hold the push
        longer than `store_wait`; it then goes out with only the memory's retries."""
        assert self._outbox is not None
        row = OutboxPush(p.push_id, p.device.device_id, p.notification.kind,
                         to_json(p.notification), p.notification.deadline, now, self.node)
        stored = asyncio.ensure_future(self._outbox.add_outbox_push(row))
        p.stored = stored
        # asyncio.wait, not wait_for: no current task needed before the first wait (send)
        await asyncio.wait((stored,), timeout=self.store_wait)
        if not stored.done():
            log.warning("push outbox write slow (> %.1f s): %s push to device %s goes out "
                        "before it is kept", self.store_wait, p.notification.kind,
                        p.device.device_id)
            return
        exc = None if stored.cancelled() else stored.exception()
        if stored.cancelled() or exc is not None:
            log_failure(log, exc or asyncio.CancelledError(), "keeping a %s push in the "
                        "outbox (sent, and retried from memory only)", p.notification.kind)
            p.stored = None

    def _forget(self, p: _Push) -> None:
        """The push is done: delete its outbox row (after its write, whatever order the
        store commits batches in)."""
        stored, p.stored = p.stored, None
        if stored is not None and self._outbox is not None:
            self._spawn(self._delete(stored, p.push_id), forgets=True)

    async def _delete(self, stored: asyncio.Future[None], push_id: str) -> None:
        assert self._outbox is not None
        try:
            await stored
        except Exception:
            return  # never written
        for pause in (*DELETE_RETRIES, None):
            try:
                await self._outbox.delete_outbox_push(push_id)
                return
            except Exception as exc:
                if pause is None:
                    log_failure(log, exc, "forgetting a done push in the outbox (the next "
                                "start sends it once more)")
                    return
                await asyncio.sleep(pause)  # the store's recovery: wall time

    async def _resume(self, kept: list[OutboxPush]) -> None:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        for row in kept:
            if self._closed:
                return
            await self._resume_one(row, done)

    async def _resume_one(self, row: OutboxPush, stored: asyncio.Future[None]) -> None:
        """Queue a push a previous process left in the outbox (`stored`: its row, written
        long ago), or forget it: unreadable, device deleted or disabled, or expired."""
        assert self._outbox is not None
        try:
            notification = from_json(row.kind, row.notification)
            device = await self._outbox.get_device(row.device_id)
        except Exception as exc:
            log.error("cannot resume push %s from the outbox (%s): dropped", row.push_id, exc)
            self._forget_row(row.push_id)
            return
        if device is None:
            await self._record(Attempt(Device(row.device_id, "", "", ""), row.kind, "",
                                       SKIPPED, reason="device deleted",
                                       push_id=row.push_id))
            self._forget_row(row.push_id)
            return
        provider = self._provider_for(device)
        if provider is None or not device.enabled:
            why = "device disabled" if provider is not None else (
                f"no {device.provider or 'push'} provider configured")
            await self._record(Attempt(device, row.kind, provider.name if provider else "",
                                       SKIPPED, reason=why, push_id=row.push_id))
            self._forget_row(row.push_id)
            return
        p = _Push(device, notification, provider, None, row.push_id, stored=stored)
        if self._clock() >= notification.deadline:
            await self._done(p, p.attempt(EXPIRED, reason="deadline passed while stopped"))
            return
        await self._record(p.attempt(QUEUED,
                                     reason="resumed from the outbox after a restart"))
        self._queue(p, self._clock())

    def _forget_row(self, push_id: str) -> None:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        self._spawn(self._delete(done, push_id), forgets=True)

    # -- results --------------------------------------------------------------------------

    def _provider_for(self, device: Device) -> Provider | None:
        return self.sink or self._providers.get(device.provider)

    def _settle(self, p: _Push, result: PushResult) -> None:
        """`p` is done, or abandoned: off the queue, out of the outbox (when done), and
        its caller told."""
        self._unqueue(p)
        if result.outcome != QUEUED:
            self._forget(p)
        if p.done is not None and not p.done.done():
            p.done.set_result(result)

    def _abandon(self, p: _Push) -> None:
        """The service stops before `p` is done."""
        if p.stored is not None:
            reason = "stopped: kept in the outbox for the next start"
            self._settle(p, p.attempt(QUEUED, p.status, reason).result())
        else:
            reason = "stopped before it got through"
            self._settle(p, p.attempt(FAILED, p.status, reason).result())

    async def _done(self, p: _Push, last: Attempt,
                    token_at: float | None = None) -> PushResult:
        """`p` ends with `last` (`_finish`), and is settled."""
        try:
            result = await self._finish(last, token_at)
        except BaseException:  # settled even when the push log's write is cancelled (a stop)
            self._settle(p, last.result())
            raise
        self._settle(p, result)
        return result

    async def _skip(self, last: Attempt) -> PushResult:
        log.info("%s push to device %s skipped: %s", last.kind, last.device.device_id,
                 last.reason)
        return await self._finish(last)

    async def _finish(self, last: Attempt, token_at: float | None = None) -> PushResult:
        """A push ends with `last`: a refused token's device disabled (`_disable`), the
        push-log row written, a push that failed or expired logged."""
        disabled = last.outcome == INVALID_TOKEN and await self._disable(last, token_at)
        await self._record(last)
        if last.outcome in (FAILED, EXPIRED):
            log.warning("%s push to device %s %s after %d attempt(s): %s %s", last.kind,
                        last.device.device_id, last.outcome, last.attempt, last.status,
                        last.reason)
        result = last.result()
        result.disabled = disabled
        return result

    async def _disable(self, refused: Attempt, token_at: float | None) -> bool:
        """Disable the device whose token the provider refused; False when the store
        kept it (its token was uploaded again since) or could not be reached."""
        # APNs 410 carries when the token became invalid: a token uploaded after that
        # is a new one and must be kept. Other rejections are about the token as of now.
        at = token_at if token_at is not None else self._clock()
        device, reason = refused.device, refused.reason
        try:
            disabled = await self._store.disable_device(device.device_id, reason, at)
        except Exception as exc:
            log_failure(log, exc, "disabling device %s", device.device_id)
            return False
        if disabled:
            device.enabled = False
            device.disabled_reason = reason
            log.warning("device %s disabled: %s rejected its token (%s)", device.device_id,
                        refused.provider, reason,
                        extra={"user": device.aor, "device": device.device_id,
                               "provider": refused.provider, "reason": reason})
        return disabled

    async def _record(self, a: Attempt) -> None:
        """One push-log row per request (attempt >= 1), or per push skipped, expired
        before a request, or resumed (attempt 0)."""
        if self._observer is not None:
            self._observer.push_attempt(a.provider, a.kind, a.outcome)
        self._trace(a)
        try:
            await self._store.add_push_attempt(a.row(self._clock()))
        except Exception as exc:  # the push log must never stop a push
            log_failure(log, exc, "push log row for device %s", a.device.device_id)

    def _trace(self, a: Attempt) -> None:
        """The attempt on the timeline: the push's own entry, and its call's or
        message's (device, provider, its answer, milliseconds)."""
        now = self._clock()
        self._health.setdefault(a.provider, ProviderHealth()).count(a, now)
        fields: dict[str, str | int | float] = {
            "device": a.device.device_id, "user": a.device.aor, "type": a.kind,
            "provider": a.provider or "none", "answer": str(a.outcome), "status": a.status,
            "ms": round(a.latency, 1), "attempt": a.attempt,
        }  # fmt: skip
        if a.reason:
            fields["reason"] = a.reason
        key = a.push_id or f"unsent-{next(self._unsent)}"
        self.trace.record("push", key, str(a.outcome), **fields)
        subject = _subject(a.note)
        if subject is not None:
            self.trace.record(subject[0], subject[1], "push", push_id=a.push_id, **fields)


def _subject(note: Notification | None) -> tuple[str, str] | None:
    """The timeline entry a notification belongs to: its call, or its message."""
    call_id = getattr(note, "call_id", None)
    if isinstance(call_id, str):
        return "call", call_id
    message_id = getattr(note, "message_id", None)
    if isinstance(message_id, str):
        return "message", message_id
    return None
