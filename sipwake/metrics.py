"""What a node measures about itself: Prometheus at `/metrics`, raw percentiles for
benchmarks at `/v1/admin/stats`.

Two kinds of metric: those the services count as things happen (registrations,
binding changes, push attempts, auth failures; prometheus_client Counters), and
readings taken at scrape time from counts the node keeps anyway (bindings, ringing
and parked calls, connections, messages stored and delivered, store errors): a
callback per metric, registered by server.py with `read`, so nothing is counted twice
and the hot paths gain nothing. The one reading that needs the store (devices by
platform) is an async query refreshed before a scrape at most every DEVICE_COUNT_TTL
seconds (`Cached`).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("sipwake.metrics")

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Latency:
    """A histogram for Prometheus plus the last samples for exact percentiles."""

    def __init__(self, name: str, doc: str, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(name, doc, buckets=_BUCKETS, registry=registry)
        self.samples: collections.deque[float] = collections.deque(maxlen=100_000)

    def observe(self, seconds: float) -> None:
        self.histogram.observe(seconds)
        self.samples.append(seconds)

    def summary(self) -> dict[str, float]:
        """count, p50 and p99 in milliseconds over the kept samples."""
        ordered = sorted(self.samples)
        if not ordered:
            return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0}

        def pct(p: float) -> float:
            return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]

        return {"count": len(ordered), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}

    def reset(self) -> None:
        self.samples.clear()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # one per node: tests run several in a process
        self.call_push = Latency(
            "sipwake_call_push_seconds",
            "INVITE received until the call push request was sent to the push provider",
            self.registry,
        )
        self.call_push_accepted = Latency(
            "sipwake_call_push_accepted_seconds",
            "INVITE received until the push provider accepted the call push",
            self.registry,
        )
        self.register_invite = Latency(
            "sipwake_register_to_invite_seconds",
            "REGISTER received until the waiting INVITE was sent to the new binding",
            self.registry,
        )
        self.auth_failures = Counter(
            "sipwake_auth_failures",
            "Failed SIP digest and HTTP Basic/Digest checks (wrong password, unknown user)",
            registry=self.registry,
        )
        self.push_attempts = Counter(
            "sipwake_push_attempts",
            "Push-log rows by provider, kind and outcome: each request's outcome (retry, "
            "delivered, invalid_token, failed, expired) and pushes skipped, expired before "
            "a request or resumed from the outbox after a restart (queued)",
            ["provider", "kind", "outcome"],
            registry=self.registry,
        )
        self.push_outbox_size = Gauge(
            "sipwake_push_outbox",
            "Pushes accepted and not done that wait for another attempt (or are being "
            "retried), by provider and kind",
            ["provider", "kind"],
            registry=self.registry,
        )
        # (counter, label values) → its child: labels() costs ~2 µs, and these count
        # every REGISTER, binding change and push
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.registrations = Counter(
            "sipwake_registrations",
            "REGISTER requests answered, by result (ok, challenged, forbidden, not_found, "
            "bad_request, interval_too_brief, push_not_supported, error, unavailable, other)",
            ["result"],
            registry=self.registry,
        )
        self.binding_changes = Counter(
            "sipwake_binding_changes",
            "Bindings that came (new), were refreshed, or went (unregistered, expired, "
            "flow_closed)",
            ["change"],
            registry=self.registry,
        )
        self.readings = Readings()
        self.registry.register(self.readings)
        self._before_scrape: list[Callable[[], Awaitable[None]]] = []

    # the registrar's observer (registrar/registrar.py RegistrarMetrics)

    def registration(self, result: str) -> None:
        self._count(self.registrations, result)

    def binding_change(self, change: str) -> None:
        self._count(self.binding_changes, change)

    def _count(self, counter: Counter, *labels: str) -> None:
        key = (counter, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    # readings at scrape time

    def read(self, reading: Reading) -> None:
        self.readings.add(reading)

    def before_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """`refresh` runs before each scrape (it keeps its own pace, see Cached)."""
        self._before_scrape.append(refresh)

    async def refresh(self) -> None:
        for refresh in self._before_scrape:
            await refresh()

    # the push service's observer (push/service.py PushObserver)

    def push_attempt(self, provider: str, kind: str, outcome: str) -> None:
        self._count(self.push_attempts, provider, kind, outcome)

    def push_outbox(self, provider: str, kind: str, change: int) -> None:
        self.push_outbox_size.labels(provider, kind).inc(change)


Labels = tuple[str, ...]
Values = float | Mapping[Labels, float]  # one value, or one per label set


class Reading:
    """One metric read at scrape time: `read()` gives its value, or a value per label
    set. `kind` is "gauge" or "counter" (a count that only grows)."""

    def __init__(
        self,
        kind: str,
        name: str,
        doc: str,
        read: Callable[[], Values],
        labels: Labels = (),
    ) -> None:
        if kind not in ("gauge", "counter"):
            raise ValueError(f"a reading is a gauge or a counter, not {kind!r}")
        self.kind, self.name, self.doc, self.read, self.labels = kind, name, doc, read, labels

    def family(self) -> Metric:
        family: GaugeMetricFamily | CounterMetricFamily
        if self.kind == "gauge":
            family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        else:
            family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        values = self.read()
        if isinstance(values, int | float):
            family.add_metric([], float(values))
        else:
            for labels, value in sorted(values.items()):
                family.add_metric(list(labels), float(value))
        return family


class Readings(Collector):
    """The readings, as a prometheus_client collector (collected on every scrape)."""

    def __init__(self) -> None:
        self._readings: list[Reading] = []

    def add(self, reading: Reading) -> None:
        self._readings.append(reading)

    def collect(self) -> Iterator[Metric]:
        for reading in self._readings:
            try:
                yield reading.family()
            except Exception:  # one broken reading must not cost the whole scrape
                log.exception("metric %s could not be read", reading.name)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read only at scrape time: nothing to check at registration


DEVICE_COUNT_TTL = 30.0  # seconds a store count is reused by scrapes


K = TypeVar("K", bound=Hashable)


class Cached(Generic[K]):
    """An async count (a store query) kept for `ttl` seconds: however often /metrics
    is scraped, the store is asked at most once per `ttl`. A failed read keeps the
    last value (the store's own error count says it failed)."""

    def __init__(
        self,
        read: Callable[[], Awaitable[Mapping[K, int]]],
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self.clock = read, clock
        self.ttl = DEVICE_COUNT_TTL if ttl is None else ttl
        self.value: Mapping[K, int] = {}
        self._at: float | None = None

    async def refresh(self) -> None:
        now = self.clock()
        if self._at is not None and now - self._at < self.ttl:
            return
        self._at = now
        try:
            self.value = await self._read()
        except Exception as exc:
            log.warning("metrics: store count failed (%s); the last value stays", exc)
