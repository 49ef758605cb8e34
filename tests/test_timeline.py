"""The in-memory timeline (sipwake/timeline.py): entries and events bounded, values cut,
offsets from the injected clock."""

from __future__ import annotations

from sipwake.testing import ManualScheduler
from sipwake.timeline import MAX_TEXT, NO_TRACE, Timeline


def test_events_in_order_with_offsets_and_a_summary() -> None:
    clock = ManualScheduler(1000.0)
    t = Timeline(clock=clock.time)
    t.record("call", "c1", "invite in", caller="sip:bob@x", live=0)
    clock.advance(0.25)
    t.record("call", "c1", "push", device="d1", answer="delivered", ms=3.5)
    entry = t.get("call", "c1")
    assert entry is not None
    body = entry.as_json()
    assert [(e["event"], e["ms"]) for e in body["events"]] == [("invite in", 0.0), ("push", 250.0)]
    assert body["summary"] == {"caller": "sip:bob@x", "live": 0, "device": "d1",
                               "answer": "delivered", "ms": 3.5, "last": "push"}
    assert entry.updated == 1000.25 and entry.started == 1000.0


def test_bounded_entries_events_and_text() -> None:
    t = Timeline(capacity=3, max_events=2, clock=ManualScheduler(1000.0).time)
    for i in range(5):
        t.record("call", f"c{i}", "invite in")
    assert [e.key for e in t.recent("call", 10)] == ["c4", "c3", "c2"]  # newest first
    assert t.get("call", "c0") is None
    for i in range(5):
        t.record("call", "c4", f"18{i}", reason="x" * 1000)
    entry = t.get("call", "c4")
    assert entry is not None and len(entry.events) == 2 and entry.dropped == 4
    # how it began and the latest stay
    assert [e.event for e in entry.events] == ["invite in", "184"]
    assert len(str(entry.summary["reason"])) == MAX_TEXT + 1
    assert t.recent("call", 0) == [] and t.recent("nothing", 5) == []


def test_kinds_are_kept_apart_and_the_null_trace_does_nothing() -> None:
    t = Timeline(clock=ManualScheduler(1000.0).time)
    t.record("call", "1", "invite in")
    t.record("message", "1", "stored")
    call, message = t.get("call", "1"), t.get("message", "1")
    assert call is not None and message is not None
    assert call.events[0].event == "invite in" and message.events[0].event == "stored"
    NO_TRACE.record("call", "1", "anything", a=1)
