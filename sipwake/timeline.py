"""What happened to each recent call, message and push, step by step, in memory.

When a user says "my phone didn't ring", the operator needs the call's story: INVITE
in → parked → push out (per device: provider, answer, milliseconds) → REGISTER in →
INVITE out → 180/200 → how it ended. Services tell it as it happens through the narrow
`Trace` protocol (`record(kind, key, event, **fields)`); the admin API and page read it
back (`GET /v1/admin/calls/{id}`, `/admin`).

Bounded, as everything an outsider can make grow: at most `capacity` entries per kind
(the oldest go first) and `max_events` events per entry (past that, events from the
middle make room: an entry keeps how it began and its latest events, and counts what it
dropped), field values cut to `MAX_TEXT` characters. Services never put a token or a
message's text in a field. Nothing here is stored: a restart forgets it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Value = str | int | float | bool
MAX_TEXT = 200  # characters kept of a string field
CAPACITY = 500  # entries kept per kind
MAX_EVENTS = 64  # events kept per entry
# kinds a node records: a call (key: park id), a stored message (its id), a push
# (its push id: every attempt, with the provider's answer), a user's registrations
KINDS = ("call", "message", "push", "register")


class Trace(Protocol):
    """Where a service tells what happens to a call, message or push."""

    def record(self, kind: str, key: str, event: str, /, **fields: Value) -> None: ...


class _NoTrace:
    def record(self, kind: str, key: str, event: str, /, **fields: Value) -> None:
        return None


NO_TRACE: Trace = _NoTrace()  # the default: a service built without a timeline


@dataclass(slots=True, init=False)
class Event:
    at: float  # unix seconds
    event: str
    fields: dict[str, Value]

    def __init__(self, at: float, event: str, fields: dict[str, Value]) -> None:
        # written out, not generated: see speedups.py on dataclasses
        self.at = at
        self.event = event
        self.fields = fields


@dataclass(slots=True, init=False)
class Entry:
    kind: str
    key: str
    started: float
    events: list[Event]
    dropped: int  # events dropped from the middle to stay within max_events
    summary: dict[str, Value]  # latest value of each field

    def __init__(
        self,
        kind: str,
        key: str,
        started: float,
        events: list[Event] | None = None,
        dropped: int = 0,
        summary: dict[str, Value] | None = None,
    ) -> None:  # written out, not generated: see speedups.py on dataclasses
        self.kind = kind
        self.key = key
        self.started = started
        self.events = [] if events is None else events
        self.dropped = dropped
        self.summary = {} if summary is None else summary

    @property
    def updated(self) -> float:
        return self.events[-1].at if self.events else self.started

    def as_json(self) -> dict[str, object]:
        """The entry with each event's offset from the first in milliseconds."""
        return {
            "kind": self.kind,
            "key": self.key,
            "started_at": self.started,
            "updated_at": self.updated,
            "summary": dict(self.summary),
            "dropped": self.dropped,
            "events": [
                {"at": e.at, "ms": round((e.at - self.started) * 1000.0, 1),
                 "event": e.event, "fields": dict(e.fields)}
                for e in self.events
            ],
        }  # fmt: skip


def _clean(value: Value) -> Value:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


class Timeline:
    """The recorder: per kind, the most recent `capacity` entries in order of creation."""

    def __init__(
        self,
        capacity: int = CAPACITY,
        max_events: int = MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity = capacity
        self.max_events = max_events
        self.clock = clock
        self._entries: dict[str, OrderedDict[str, Entry]] = {k: OrderedDict() for k in KINDS}

    def record(self, kind: str, key: str, event: str, /, **fields: Value) -> None:
        entries = self._entries.get(kind)
        if entries is None:
            entries = self._entries[kind] = OrderedDict()
        now = self.clock()
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = Entry(kind, key, now)
            while len(entries) > self.capacity:
                entries.popitem(last=False)
        for name, value in fields.items():  # `fields` is this call's own dict: cut in place
            if value.__class__ is str and len(value) > MAX_TEXT:
                fields[name] = _clean(value)
        summary = entry.summary
        summary.update(fields)
        summary["last"] = event
        events = entry.events
        if len(events) >= self.max_events:
            # full: the beginning stays (how it started), and so does the latest (a
            # user's registrations, a long call's end); one from the middle goes
            del events[self.max_events // 2 if self.max_events > 1 else 0]
            entry.dropped += 1
        events.append(Event(now, event, fields))

    def get(self, kind: str, key: str) -> Entry | None:
        entries = self._entries.get(kind)
        return entries.get(key) if entries is not None else None

    def recent(self, kind: str, limit: int) -> list[Entry]:
        """The newest `limit` entries of `kind`, newest first."""
        entries = self._entries.get(kind)
        if entries is None or limit <= 0:
            return []
        out: list[Entry] = []
        for key in reversed(entries):
            out.append(entries[key])
            if len(out) >= limit:
                break
        return out
