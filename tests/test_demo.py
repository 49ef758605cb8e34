"""`sipwake demo`, as installed: the whole story (token upload, sleep, call → push →
wake → answer on iOS and Android, missed call, message with preview → delivery on
REGISTER, voicemail, the call's timeline) runs on its own in a few seconds, each step
a line with ✓, and exits 0."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from sipwake.demo import story
from tests.served import run_sipwake

STORY = [
    "registers with its PushKit and alert tokens in the Contact (RFC 8599): 200 OK",
    "uploads its token over HTTP",
    "apps are suspended (REGISTER Expires: 0): no binding left",
    "Dave calls Alice: nobody is registered, the call is parked and Dave hears 180 Ringing",
    "APNs gets a VoIP push for Alice's iPhone (apns-push-type: voip",
    "Alice's app wakes (PushKit → CallKit) and registers: the parked INVITE follows",
    "Alice answers: Dave gets 200 OK",
    "FCM gets a high-priority data message for Carol's phone: call from Dave",
    "Carol answers: Dave gets 200 OK",
    "APNs gets an alert with Bob's ringtone (aps.sound ring.caf), and again",
    "Dave gives up (CANCEL → 487 Request Terminated): APNs gets a missed_call alert",
    "GET /v1/calls?missed=1: 1 missed call",
    "stored before the answer, 202 Accepted",
    'FCM gets a message push: preview "Running late, see you at 8?", unread 1',
    "the message is delivered over SIP",
    "APNs gets a voicemail alert for Alice's iPhone (alert token): new 1",
    "Alice's call, step by step: invite in → parked → push → register in → invite out",
    "✓ every step worked: 27 steps",
]


async def test_demo_tells_the_whole_story_and_exits_0(tmp_path: Path) -> None:
    started = time.monotonic()
    code, out = await run_sipwake("demo", cwd=tmp_path, timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert "✗" not in out, out
    for line in STORY:
        assert line in out, f"{line!r} not in:\n{out}"
    steps = re.findall(r"^ +\d+\.\d\ds ✓ ", out, re.M)
    assert len(steps) == 27, out
    assert elapsed < 20, f"the demo took {elapsed:.1f} s"
    assert not list(tmp_path.iterdir())  # its own temporary folder, gone; nothing left here


class BrokenNode:
    """A node whose SIP side never answers: the story must say where it stopped."""

    def __init__(self, config: object) -> None:
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True


async def test_a_failing_step_is_a_cross_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(story, "STEP_TIMEOUT", 0.3)
    nodes: list[BrokenNode] = []

    def make(config: object) -> BrokenNode:
        nodes.append(BrokenNode(config))
        return nodes[-1]

    out = io.StringIO()
    assert await story.run_demo(make, out) == 1
    text = out.getvalue()
    assert "✓ sipwake serving localhost" in text
    assert "✗ Alice's iPhone (iOS, VoIP mode) registers with its PushKit and alert tokens in " \
           "the Contact (RFC 8599): nothing within 0.3 s" in text, text
    assert "✗ the story stopped after 2 steps" in text and "every step worked" not in text
    assert nodes[0].stopped
