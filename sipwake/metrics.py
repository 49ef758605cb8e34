"""What a node measures about itself: Prometheus at `/metrics`, raw percentiles for
benchmarks at `/v1/admin/stats`."""

from __future__ import annotations

import collections

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self._push_attempts: dict[tuple[str, str, str], Counter] = {}

    # the push service's observer (push/service.py PushObserver)

    def push_attempt(self, provider: str, kind: str, outcome: str) -> None:
        key = (provider, kind, outcome)
        child = self._push_attempts.get(key)
        if child is None:
            child = self._push_attempts[key] = self.push_attempts.labels(*key)
        child.inc()

    def push_outbox(self, provider: str, kind: str, change: int) -> None:
        self.push_outbox_size.labels(provider, kind).inc(change)
