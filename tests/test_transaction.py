"""Transaction layer (RFC 3261 §17, RFC 6026): fake clock, no sockets, no sleeps."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.sip.message import Message, make_response, parse
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import (
    COOKIE,
    J_GRAIN,
    ClientTransaction,
    Scheduler,
    ServerTransaction,
    State,
    Timers,
    TransactionLayer,
    make_ack,
    make_cancel,
    new_branch,
)
from sipwake.testing import ManualScheduler

UDP = Peer("udp", "192.0.2.10", 5060)
TCP = Peer("tcp", "192.0.2.10", 5071, "flow-1")
DEST = Peer("udp", "198.51.100.7", 5060)
DEST_TCP = Peer("tcp", "198.51.100.7", 5060)
T1, T2, T4 = 0.5, 4.0, 5.0
REASON = 'SIP;cause=200;text="Call completed elsewhere"'


def request(
    method: str = "MESSAGE",
    branch: str = "z9hG4bKaaa1",
    *,
    cseq: int = 1,
    cseq_method: str | None = None,
    source: Peer | None = UDP,
    to_tag: str = "",
    call_id: str = "call-1@192.0.2.10",
    sent_by: str = "192.0.2.10:5060",
    uri: str = "sip:bob@example.com",
    extra: str = "",
) -> Message:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by};branch={branch};rport\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKdownstream\r\n"
        "Max-Forwards: 69\r\n"
        f"{extra}"
        'From: "Alice" <sip:alice@example.com>;tag=alice1\r\n'
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    msg.source = source
    return msg


def wire(msg: Message, source: Peer | None) -> Message:
    """What the far end would see: serialize and parse again."""
    out = parse(msg.to_bytes())
    out.source = source
    return out


def answer(req: Message, status: int, to_tag: str | None = "bob9", source: Peer = DEST) -> Message:
    """A response to one of our client requests, as received from the network."""
    return wire(make_response(req, status, to_tag=to_tag), source)


class Harness:
    """Transport (a list), TU (lists) and fake clock around one TransactionLayer."""

    def __init__(self, timers: Timers | None = None) -> None:
        self.clock = ManualScheduler()
        self.sent: list[tuple[float, Message, Peer]] = []
        self.fail = False
        self.requests: list[ServerTransaction] = []
        self.cancels: list[ServerTransaction] = []
        self.acks: list[Message] = []
        self.strays: list[Message] = []
        self.auto: dict[str, int] = {}  # method -> status the TU answers at once
        self.layer = TransactionLayer(self.send, self, self.clock, timers or Timers())

    # transport
    def send(self, msg: Message, peer: Peer) -> bool:
        if self.fail:
            return False
        self.sent.append((self.clock.now, msg, peer))
        return True

    def take(self) -> list[Message]:
        out = [m for _, m, _ in self.sent]
        self.sent.clear()
        return out

    def times(self, pred: str | int) -> list[float]:
        """Send times of requests with that method (str) or responses with that status."""
        return [
            t for t, m, _ in self.sent if (m.method == pred if isinstance(pred, str) else
                                           m.status == pred)
        ]  # fmt: skip

    # TU
    def on_request(self, st: ServerTransaction) -> None:
        self.requests.append(st)
        status = self.auto.get(st.request.method)
        if status:
            st.respond(make_response(st.request, status, to_tag="uas1"))

    def on_cancel(self, invite: ServerTransaction) -> None:
        self.cancels.append(invite)

    def on_ack(self, ack: Message) -> None:
        self.acks.append(ack)

    def on_stray_response(self, resp: Message) -> None:
        self.strays.append(resp)

    def idle(self) -> bool:
        return self.layer.counts() == {"server": 0, "client": 0, "timers": 0}


class Recorder:
    def __init__(self) -> None:
        self.responses: list[tuple[float, Message]] = []
        self.clock: ManualScheduler | None = None

    def __call__(self, resp: Message) -> None:
        self.responses.append((self.clock.now if self.clock else 0.0, resp))

    @property
    def statuses(self) -> list[int]:
        return [r.status for _, r in self.responses]

    @property
    def finals(self) -> list[int]:
        return [s for s in self.statuses if s >= 200]


def client(h: Harness, msg: Message, dest: Peer = DEST) -> tuple[ClientTransaction, Recorder]:
    rec = Recorder()
    rec.clock = h.clock
    return h.layer.request(msg, dest, rec), rec


def outgoing(method: str = "MESSAGE", **kw: object) -> Message:
    msg = request(method, new_branch(), source=None, sent_by="203.0.113.1:5060", **kw)  # type: ignore[arg-type]
    return msg


# ===================================================================== scheduler
def test_manual_scheduler_fires_in_time_order_and_cancels() -> None:
    clock = ManualScheduler()
    fired: list[str] = []
    clock.call_later(2, lambda: fired.append("b"))
    clock.call_later(1, lambda: fired.append("a"))
    h = clock.call_later(1.5, lambda: fired.append("x"))
    clock.call_later(1, lambda: clock.call_later(0.5, lambda: fired.append("nested")))
    h.cancel()
    assert clock.pending == 3
    assert clock.advance(1.0) == 2
    assert fired == ["a"]
    clock.advance(1.0)
    assert fired == ["a", "nested", "b"]
    assert clock.now == 2.0 and clock.pending == 0


async def test_asyncio_loop_is_a_scheduler() -> None:
    loop = asyncio.get_running_loop()
    sched: Scheduler = loop
    sent: list[Message] = []

    def send(msg: Message, peer: Peer) -> bool:
        sent.append(msg)
        return True

    h = Harness()
    layer = TransactionLayer(send, h, sched)
    layer.receive(request("OPTIONS", source=TCP))
    h.requests[0].respond(make_response(h.requests[0].request, 200, to_tag="x"))
    assert [m.status for m in sent] == [200]
    assert layer.counts() == {"server": 0, "client": 0, "timers": 0}  # reliable: Timer J = 0


def test_new_branch_has_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith(COOKIE) for b in branches)


# ===================================================================== server, non-INVITE
def test_server_non_invite_absorbs_retransmissions_and_timer_j_unreliable() -> None:
    h = Harness()
    h.layer.receive(request())
    assert len(h.requests) == 1
    st = h.requests[0]
    assert st.state is State.TRYING
    h.layer.receive(request())  # retransmission in Trying: nothing to resend
    assert len(h.requests) == 1 and h.sent == []

    st.respond(make_response(st.request, 100))
    assert st.state is State.PROCEEDING
    h.layer.receive(request())
    assert [m.status for m in h.take()] == [100, 100]

    full = st.request
    st.respond(make_response(st.request, 202, to_tag="uas1"))
    assert st.state is State.COMPLETED
    assert st.request is full  # the TU's objects are left alone
    h.layer.receive(request())
    h.layer.receive(request())
    sent = h.sent[:]
    assert [m.status for _, m, _ in sent] == [202, 202, 202]
    assert sent[1][1].to_bytes() == sent[2][1].to_bytes() == sent[0][1].to_bytes()
    assert all(peer == UDP for _, _, peer in sent)
    assert len(h.requests) == 1
    assert h.layer.counts() == {"server": 1, "client": 0, "timers": 1}

    st.respond(make_response(st.request, 500))  # late responses from the TU are dropped
    assert len(h.sent) == 3
    h.clock.advance(64 * T1 - 0.01)
    h.layer.receive(request())  # still absorbed, and answered from the bytes kept
    assert [m.status for m in h.take()] == [202, 202, 202, 202] and len(h.requests) == 1
    h.clock.advance(0.01 + J_GRAIN)  # Timer J, swept at most J_GRAIN late
    assert h.idle()
    h.layer.receive(request())  # the same branch now starts a new transaction
    assert len(h.requests) == 2


def test_timer_j_one_sweeper_for_every_lingering_transaction() -> None:
    """Thousands of completed UDP transactions share one timer; each leaves no sooner
    than 64*T1 after its final response and at most J_GRAIN later."""
    h = Harness()
    done_at: list[tuple[ServerTransaction, float]] = []
    for i in range(2000):
        h.layer.receive(request(branch=f"{COOKIE}linger{i}"))
        st = h.requests[-1]
        st.respond(make_response(st.request, 200, to_tag="t"))
        done_at.append((st, h.clock.time()))
        h.clock.advance(0.005)  # completions spread over 10 s
    assert h.layer.counts() == {"server": 2000, "client": 0, "timers": 1}
    while h.layer.counts()["server"]:
        h.clock.advance(0.01)
        now = h.clock.time()
        left = h.layer.counts()["server"]
        must_stay = sum(now < t + 64 * T1 for _, t in done_at)
        may_stay = sum(now <= t + 64 * T1 + J_GRAIN + 0.011 for _, t in done_at)
        assert must_stay <= left <= may_stay
    assert h.idle()


def test_a_lingering_transaction_leaves_the_collector_nothing_to_walk() -> None:
    """At REGISTER rates ~10^5 completed transactions absorb retransmissions for 32 s:
    what each keeps is plain values the cyclic collector does not track (objects, it was
    the largest part of every full collection, a pause under load)."""
    h = Harness()
    h.auto = {"MESSAGE": 202}
    for i in range(100):
        h.layer.receive(request(branch=f"{COOKIE}gc{i}"))
    h.requests.clear()  # the TU lets go of its transactions
    gc.collect()
    gc.collect()  # a tuple holding a tuple: untracked once the inner one is
    assert h.layer.counts()["server"] == 100
    kept = [*h.layer._done.values(), *h.layer._lingering]
    assert len(kept) == 200 and not any(gc.is_tracked(x) for x in kept)


def test_server_non_invite_reliable_timer_j_zero() -> None:
    h = Harness()
    h.layer.receive(request(source=TCP))
    st = h.requests[0]
    st.respond(make_response(st.request, 200, to_tag="uas1"))
    assert st.state is State.TERMINATED
    assert h.idle() and h.clock.pending == 0
    assert [(m.status, p) for _, m, p in h.sent] == [(200, TCP)]


def test_server_same_branch_different_method_or_sent_by_are_distinct() -> None:
    h = Harness()
    h.layer.receive(request("MESSAGE"))
    h.layer.receive(request("OPTIONS"))
    h.layer.receive(request("MESSAGE", sent_by="192.0.2.99:5060"))
    assert len(h.requests) == 3


def test_server_transport_error_terminates() -> None:
    h = Harness()
    h.layer.receive(request())
    st = h.requests[0]
    h.fail = True
    st.respond(make_response(st.request, 200, to_tag="uas1"))
    assert st.state is State.TERMINATED
    assert h.idle()
    h.fail = False
    st.respond(make_response(st.request, 200, to_tag="uas1"))  # ignored
    assert h.sent == []


def test_tu_exception_gets_500() -> None:
    h = Harness()

    def boom(st: ServerTransaction) -> None:
        raise RuntimeError("bug")

    h.on_request = boom  # type: ignore[method-assign]
    h.layer.receive(request())
    assert [m.status for m in h.take()] == [500]
    h.clock.run_all()
    assert h.idle()


# ===================================================================== server, INVITE
def test_server_invite_100_then_486_timer_g_then_ack() -> None:
    h = Harness()
    inv = request("INVITE", extra="Timestamp: 54\r\n")
    h.layer.receive(inv)
    st = h.requests[0]
    sent = h.take()
    assert [m.status for m in sent] == [100]
    assert sent[0].to_tag == "" and sent[0].get("timestamp") == "54"
    assert st.state is State.PROCEEDING and st.last_response is sent[0]

    h.layer.receive(request("INVITE"))  # retransmission: the 100 again, no new TU event
    st.respond(make_response(st.request, 180, to_tag="uas1"))
    h.layer.receive(request("INVITE"))
    assert [m.status for m in h.take()] == [100, 180, 180]
    assert len(h.requests) == 1

    st.respond(make_response(st.request, 486, to_tag="uas1"))
    assert st.state is State.COMPLETED
    h.clock.advance(8.0)
    assert h.times(486) == pytest.approx([0, T1, 3 * T1, 7 * T1, 15 * T1])  # +T1,2T1,4T1,8T1
    h.clock.advance(8.0)
    assert h.times(486)[4:] == pytest.approx([7.5, 11.5, 15.5])  # capped at T2
    h.layer.receive(request("INVITE"))  # retransmitted INVITE: resend the 486
    assert len(h.times(486)) == 8

    ack = request("ACK", to_tag="uas1")
    h.layer.receive(ack)
    assert st.state is State.CONFIRMED and h.acks == []
    h.layer.receive(ack)  # absorbed
    h.clock.advance(20)
    assert len(h.times(486)) == 8  # ACK stopped Timer G
    assert st.state is State.TERMINATED  # Timer I = T4
    assert h.idle()


def test_server_invite_timer_i_exact_and_reliable() -> None:
    h = Harness()
    h.layer.receive(request("INVITE"))
    st = h.requests[0]
    st.respond(make_response(st.request, 603, to_tag="uas1"))
    h.layer.receive(request("ACK", to_tag="uas1"))
    h.clock.advance(T4 - 0.01)
    assert st.state is State.CONFIRMED
    h.clock.advance(0.02)
    assert st.state is State.TERMINATED and h.idle()

    h2 = Harness()
    h2.layer.receive(request("INVITE", source=TCP))
    st2 = h2.requests[0]
    st2.respond(make_response(st2.request, 486, to_tag="uas1"))
    h2.clock.advance(10)
    assert len(h2.times(486)) == 1  # no Timer G on reliable transports
    h2.layer.receive(request("ACK", to_tag="uas1", source=TCP))
    assert st2.state is State.TERMINATED and h2.idle()  # Timer I = 0


def test_server_invite_timer_h_without_ack() -> None:
    h = Harness()
    h.layer.receive(request("INVITE"))
    st = h.requests[0]
    st.respond(make_response(st.request, 486, to_tag="uas1"))
    h.clock.advance(64 * T1 - 0.01)
    assert st.state is State.COMPLETED
    h.clock.advance(0.02)
    assert st.state is State.TERMINATED
    assert h.times(486) == pytest.approx(
        [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    )
    h.clock.advance(100)
    assert h.idle()
    h.layer.receive(request("ACK", to_tag="uas1"))  # too late: an ACK for nothing goes to the TU
    assert len(h.acks) == 1


def test_server_invite_2xx_accepted_absorbs_invites_timer_l() -> None:
    h = Harness()
    h.layer.receive(request("INVITE"))
    st = h.requests[0]
    ok = make_response(st.request, 200, to_tag="uas1")
    st.respond(ok)
    assert st.state is State.ACCEPTED
    h.layer.receive(request("INVITE"))  # absorbed, not resent by the transaction
    h.clock.advance(10)
    assert h.times(200) == [0]  # no retransmissions by the transaction
    st.respond(ok)  # the TU core retransmits the 2xx itself
    assert h.times(200) == [0, 10]
    st.respond(make_response(st.request, 486, to_tag="uas1"))  # non-2xx after 2xx: dropped
    assert len(h.times(486)) == 0
    # an ACK matching the transaction in Accepted belongs to the TU (RFC 6026 §7.1)
    h.layer.receive(request("ACK", to_tag="uas1"))
    h.layer.receive(request("ACK", "z9hG4bKnewack", to_tag="uas1"))  # usual 2xx ACK
    assert len(h.acks) == 2 and len(h.requests) == 1
    h.clock.advance(64 * T1 - 10 - 0.01)
    assert st.state is State.ACCEPTED
    h.clock.advance(0.02)  # Timer L
    assert st.state is State.TERMINATED and h.idle()


# ===================================================================== CANCEL (server)
def test_cancel_answered_200_and_tu_told() -> None:
    h = Harness()
    h.layer.receive(request("INVITE"))
    st = h.requests[0]
    st.respond(make_response(st.request, 180, to_tag="uas1"))
    h.take()
    cancel = request("CANCEL")
    h.layer.receive(cancel)
    resp = h.take()
    assert [(m.status, m.cseq) for m in resp] == [(200, (1, "CANCEL"))]
    assert resp[0].to_tag == "uas1"  # §9.2: same To tag as the INVITE's responses
    assert h.cancels == [st] and h.requests == [st]  # CANCEL is not a TU request
    st.respond(make_response(st.request, 487, to_tag="uas1"))
    h.layer.receive(request("CANCEL"))  # retransmitted CANCEL: 200 again, TU not told twice
    assert [m.status for m in h.take()] == [487, 200]
    assert len(h.cancels) == 1
    h.layer.receive(request("ACK", to_tag="uas1"))
    h.clock.run_all()
    assert h.idle()


def test_cancel_without_match_481() -> None:
    h = Harness()
    h.layer.receive(request("CANCEL", "z9hG4bKnothing"))
    sent = h.take()
    assert [m.status for m in sent] == [481]
    assert sent[0].to_tag and h.cancels == []
    # same branch but a different sent-by is not a match either
    h.layer.receive(request("INVITE"))
    h.take()
    h.layer.receive(request("CANCEL", sent_by="192.0.2.66:5060"))
    assert [m.status for m in h.take()] == [481]
    h.requests[0].respond(make_response(h.requests[0].request, 486, to_tag="u"))
    h.layer.receive(request("ACK", to_tag="u"))
    h.clock.run_all()
    assert h.idle()


def test_cancel_after_final_200_without_effect_then_481_once_gone() -> None:
    """§9.2: "as long as the CANCEL matched an existing transaction, the UAS answers the
    CANCEL request itself with a 200"; a final already sent means no effect on the INVITE
    (the TU is not told). Once the INVITE transaction is gone, nothing matches: 481."""
    h = Harness()
    h.layer.receive(request("INVITE"))
    st = h.requests[0]
    st.respond(make_response(st.request, 200, to_tag="uas1"))
    h.take()
    h.layer.receive(request("CANCEL"))
    sent = h.take()
    assert [m.status for m in sent] == [200] and sent[0].to_tag == "uas1"
    assert h.cancels == [] and st.state is State.ACCEPTED
    h.clock.run_all()
    assert h.idle()
    h.layer.receive(request("CANCEL"))
    assert [m.status for m in h.take()] == [481]


# ===================================================================== client, non-INVITE
def test_client_non_invite_timer_e_schedule_and_timer_f() -> None:
    h = Harness()
    msg = outgoing()
    ct, rec = client(h, msg)
    assert ct.state is State.TRYING
    h.clock.advance(40)
    assert h.times("MESSAGE") == pytest.approx(
        [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    )
    assert rec.statuses == [408]
    assert rec.responses[0][0] == pytest.approx(64 * T1)
    assert rec.responses[0][1].source is None
    assert ct.state is State.TERMINATED and h.idle()
    h.layer.receive(answer(msg, 200))  # too late: stray
    assert rec.statuses == [408] and len(h.strays) == 1


def test_client_non_invite_t2_once_proceeding_then_final_and_timer_k() -> None:
    h = Harness()
    msg = outgoing()
    ct, rec = client(h, msg)
    h.clock.advance(0.7)
    h.layer.receive(answer(msg, 100, to_tag=None))
    assert ct.state is State.PROCEEDING
    h.clock.advance(10.0 - 0.7)
    assert h.times("MESSAGE") == pytest.approx([0, 0.5, 1.5, 5.5, 9.5])
    h.layer.receive(answer(msg, 202))
    assert ct.state is State.COMPLETED and rec.statuses == [100, 202]
    h.layer.receive(answer(msg, 202))  # retransmitted final absorbed
    h.clock.advance(T4 - 0.01)
    assert rec.statuses == [100, 202] and ct.state is State.COMPLETED
    assert len(h.times("MESSAGE")) == 5  # no more retransmissions after the final
    h.clock.advance(0.02)  # Timer K
    assert ct.state is State.TERMINATED and h.idle()


def test_client_non_invite_reliable() -> None:
    h = Harness()
    msg = outgoing()
    ct, rec = client(h, msg, DEST_TCP)
    h.clock.advance(20)
    assert h.times("MESSAGE") == [0]  # no Timer E on reliable transports
    h.layer.receive(answer(msg, 200, source=DEST_TCP))
    assert rec.statuses == [200] and ct.state is State.TERMINATED and h.idle()  # K = 0


def test_timers_configurable_t1() -> None:
    h = Harness(Timers(t1=0.1))
    msg = outgoing()
    _ct, rec = client(h, msg)
    h.clock.advance(10)
    assert h.times("MESSAGE") == pytest.approx([0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
    assert rec.statuses == [408] and rec.responses[0][0] == pytest.approx(6.4)
    assert h.idle()

    h = Harness(Timers(t1=0.1, t2=0.25))
    client(h, outgoing())
    h.clock.advance(1.0)
    assert h.times("MESSAGE") == pytest.approx([0, 0.1, 0.3, 0.55, 0.8])


# ===================================================================== client, INVITE
def test_client_invite_timer_a_and_b() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, rec = client(h, inv)
    assert ct.state is State.CALLING
    h.clock.advance(64 * T1 - 0.01)
    assert h.times("INVITE") == pytest.approx([0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])  # no T2 cap
    assert rec.statuses == []
    h.clock.advance(0.02)  # Timer B
    assert rec.statuses == [408] and ct.state is State.TERMINATED and h.idle()
    assert not [m for m in h.take() if m.method in ("ACK", "CANCEL")]


def test_client_invite_provisional_stops_timer_a_and_b() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, rec = client(h, inv)
    h.clock.advance(0.2)
    h.layer.receive(answer(inv, 100, to_tag=None))
    h.layer.receive(answer(inv, 180))
    h.clock.advance(100)
    assert h.times("INVITE") == [0]
    assert rec.statuses == [100, 180] and ct.state is State.PROCEEDING
    assert h.layer.counts() == {"server": 0, "client": 1, "timers": 0}  # awaits final/cancel
    h.layer.receive(answer(inv, 480))
    h.clock.run_all()
    assert rec.statuses == [100, 180, 480] and h.idle()


def test_client_invite_ack_for_486_and_retransmitted_486() -> None:
    h = Harness()
    inv = outgoing("INVITE", extra="Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n")
    ct, rec = client(h, inv)
    h.take()
    busy = answer(inv, 486, to_tag="busy7")
    h.layer.receive(busy)
    assert ct.state is State.COMPLETED and rec.statuses == [486]
    sent = h.sent[:]
    assert len(sent) == 1 and sent[0][2] == DEST
    ack = wire(sent[0][1], None)
    assert ack.method == "ACK" and ack.uri == inv.uri
    assert ack.get_all("via") == [inv.get_all("via")[0]]  # only our top Via
    assert ack.top_via.branch == inv.top_via.branch
    assert ack.cseq == (1, "ACK") and ack.call_id == inv.call_id
    assert ack.get("from") == inv.get("from")
    assert ack.to_tag == "busy7" and ack.get("to") == busy.get("to")
    assert ack.get_all("route") == inv.get_all("route")
    assert ack.body == b""

    h.clock.advance(1)
    h.layer.receive(answer(inv, 486, to_tag="busy7"))  # retransmitted: ACK again, no callback
    assert [m.method for m in h.take()] == ["ACK", "ACK"]
    assert rec.statuses == [486]
    h.clock.advance(32 - 1 - 0.01)
    assert ct.state is State.COMPLETED
    h.clock.advance(0.02)  # Timer D = 32 s
    assert ct.state is State.TERMINATED and h.idle()
    assert h.times("INVITE") == []  # the final stopped Timer A

    # reliable: Timer D = 0
    h2 = Harness()
    inv2 = outgoing("INVITE")
    ct2, _ = client(h2, inv2, DEST_TCP)
    h2.layer.receive(answer(inv2, 404, source=DEST_TCP))
    assert [m.method for m in h2.take()] == ["INVITE", "ACK"]
    assert ct2.state is State.TERMINATED and h2.idle()


def test_client_invite_2xx_not_acked_retransmissions_passed_up_timer_m() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, rec = client(h, inv)
    h.layer.receive(answer(inv, 180))
    h.layer.receive(answer(inv, 200))
    assert ct.state is State.ACCEPTED
    h.layer.receive(answer(inv, 200))  # retransmitted 2xx
    h.layer.receive(answer(inv, 200, to_tag="fork2"))  # another fork's 2xx
    h.layer.receive(answer(inv, 486))  # non-2xx after 2xx: ignored
    assert rec.statuses == [180, 200, 200, 200]
    assert [m.method for m in h.take()] == ["INVITE"]  # never ACKs a 2xx
    h.clock.advance(64 * T1 + 0.01)  # Timer M
    assert ct.state is State.TERMINATED and h.idle()
    h.layer.receive(answer(inv, 200))
    assert rec.statuses == [180, 200, 200, 200] and len(h.strays) == 1


def test_a_finished_client_transaction_lets_go_of_its_callback() -> None:
    """The TU's callback usually holds the TU's state, which holds the transaction: once
    nothing more can reach the TU, the transaction drops it, so the pair is freed by
    reference counting and not left to a (rare) full collection."""
    h = Harness()
    ended: list[weakref.ref[Recorder]] = []
    for final, wait in ((200, 64 * T1), (486, 32.0), (None, 64 * T1)):  # Timer M, D, B
        inv = outgoing("INVITE")
        ct, rec = client(h, inv)
        if final is not None:
            h.layer.receive(answer(inv, final))
        h.clock.advance(wait + 0.01)
        assert ct.state is State.TERMINATED and rec.finals == [final or 408]
        ended.append(weakref.ref(rec))
        del rec
        assert ended[-1]() is None, final
    assert h.idle()


def test_stray_response() -> None:
    h = Harness()
    resp = make_response(request("INVITE", "z9hG4bKnotours"), 200, to_tag="x")
    resp.source = DEST
    h.layer.receive(resp)
    assert h.strays == [resp]
    h.layer.receive(request("ACK", "z9hG4bKnothing", to_tag="x"))  # ACK for nothing
    assert len(h.acks) == 1
    assert h.idle()


# ===================================================================== client CANCEL
def test_cancel_before_provisional_waits_then_sent_with_headers() -> None:
    h = Harness()
    inv = outgoing("INVITE", extra="Route: <sip:edge.example.com;lr>\r\n")
    inv.set("Via", inv.get_all("via")[0])  # a UAC's single Via
    ct, rec = client(h, inv)
    ct.cancel(REASON)
    h.clock.advance(1.0)
    assert [m.method for m in h.take()] == ["INVITE", "INVITE"]  # nothing before a 1xx
    h.layer.receive(answer(inv, 180))
    sent = h.sent[:]
    assert [m.method for _, m, _ in sent] == ["CANCEL"] and sent[0][2] == DEST
    cancel = wire(sent[0][1], None)
    assert cancel.uri == inv.uri and cancel.call_id == inv.call_id
    assert cancel.get("from") == inv.get("from") and cancel.get("to") == inv.get("to")
    assert cancel.to_tag == ""
    assert cancel.cseq == (1, "CANCEL")
    assert cancel.get_all("via") == inv.get_all("via")
    assert cancel.get_all("route") == inv.get_all("route")
    assert cancel.get("reason") == REASON
    assert cancel.max_forwards == 69
    assert rec.statuses == [180]
    h.take()
    h.clock.advance(0.5)  # the CANCEL is retransmitted (its own non-INVITE transaction)
    assert [m.method for m in h.take()] == ["CANCEL"]

    ct.cancel(REASON)  # only once
    h.layer.receive(answer(cancel, 200))  # the CANCEL's 200 is not a stray
    h.layer.receive(answer(inv, 487))
    assert rec.statuses == [180, 487] and h.strays == []
    assert [m.method for m in h.take()] == ["ACK"]
    h.clock.run_all()
    assert h.idle()


def test_cancel_after_provisional_is_immediate_without_reason() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, _ = client(h, inv)
    h.layer.receive(answer(inv, 100, to_tag=None))
    h.take()
    ct.cancel()
    sent = h.take()
    assert [m.method for m in sent] == ["CANCEL"] and sent[0].get("reason") is None
    assert h.layer.counts()["client"] == 2


def test_cancel_with_no_response_times_out_by_timer_b() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, rec = client(h, inv)
    ct.cancel()
    h.clock.advance(64 * T1 + 1)
    assert rec.statuses == [408]
    assert "CANCEL" not in [m.method for m in h.take()]
    assert h.idle()


def test_cancel_after_final_does_nothing() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, _ = client(h, inv)
    ct.cancel()  # pending
    h.layer.receive(answer(inv, 486))  # final before any 1xx: pending CANCEL dropped
    ct.cancel()
    inv2 = outgoing("INVITE")
    ct2, _ = client(h, inv2)
    h.layer.receive(answer(inv2, 200))
    ct2.cancel()
    assert "CANCEL" not in [m.method for m in h.take()]
    h.clock.run_all()
    assert h.idle()


def test_cancelled_invite_without_final_gives_up_after_64t1() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, rec = client(h, inv)
    h.layer.receive(answer(inv, 180))
    h.clock.advance(100)  # Proceeding: no timer of the transaction's own
    ct.cancel()
    h.clock.advance(64 * T1 - 0.01)
    assert rec.statuses == [180]
    h.clock.advance(0.02)  # §9.1: consider the INVITE gone
    assert rec.statuses == [180, 408]
    h.clock.run_all()
    assert h.idle()


def test_make_cancel_and_make_ack_helpers() -> None:
    inv = outgoing("INVITE")
    assert make_cancel(inv).cseq == (1, "CANCEL")
    resp = answer(inv, 500, to_tag="t9")
    assert make_ack(inv, resp).to_tag == "t9"


# ===================================================================== transport failure
def test_client_transport_failure_503_once() -> None:
    h = Harness()
    h.fail = True
    msg = outgoing()
    ct, rec = client(h, msg)
    assert rec.statuses == []  # never before request() returns
    assert ct.state is State.TERMINATED
    h.clock.advance(0)
    assert rec.statuses == [503] and rec.responses[0][1].source is None
    assert rec.responses[0][1].cseq == (1, "MESSAGE")
    h.clock.run_all()
    assert rec.statuses == [503] and h.idle()


def test_client_transport_failure_on_retransmission() -> None:
    h = Harness()
    inv = outgoing("INVITE")
    ct, rec = client(h, inv)
    h.fail = True
    h.clock.advance(T1)
    assert rec.statuses == [503] and ct.state is State.TERMINATED
    h.clock.run_all()
    assert rec.statuses == [503] and h.idle()


def test_send_raising_counts_as_failure() -> None:
    h = Harness()

    def boom(msg: Message, peer: Peer) -> bool:
        raise OSError("no route")

    layer = TransactionLayer(boom, h, h.clock)
    rec = Recorder()
    layer.request(outgoing(), DEST, rec)
    h.clock.run_all()
    assert rec.statuses == [503]


def test_callback_exception_does_not_break_the_layer() -> None:
    h = Harness()

    def bad(resp: Message) -> None:
        raise RuntimeError("TU bug")

    msg = outgoing()
    h.layer.request(msg, DEST, bad)
    h.layer.receive(answer(msg, 200))
    h.clock.run_all()
    assert h.idle()


# ===================================================================== RFC 2543 peers
def test_rfc2543_matching_without_cookie() -> None:
    h = Harness()
    old = {"branch": "", "sent_by": "192.0.2.20"}
    h.layer.receive(request("INVITE", **old))  # type: ignore[arg-type]
    h.layer.receive(request("INVITE", **old))  # type: ignore[arg-type]
    assert len(h.requests) == 1
    st = h.requests[0]
    assert [m.status for m in h.take()] == [100, 100]
    # a different CSeq, Call-ID or From tag is another transaction
    h.layer.receive(request("INVITE", cseq=2, **old))  # type: ignore[arg-type]
    h.layer.receive(request("INVITE", call_id="other", **old))  # type: ignore[arg-type]
    assert len(h.requests) == 3
    # CANCEL matches by the same fields
    h.layer.receive(request("CANCEL", **old))  # type: ignore[arg-type]
    assert [m.status for m in h.take()][-1] == 200 and h.cancels == [st]
    st.respond(make_response(st.request, 487, to_tag="uas1"))
    # the ACK carries our To tag; a wrong tag does not match
    h.layer.receive(request("ACK", to_tag="wrong", **old))  # type: ignore[arg-type]
    assert st.state is State.COMPLETED and len(h.acks) == 1
    h.layer.receive(request("ACK", to_tag="uas1", **old))  # type: ignore[arg-type]
    assert st.state is State.CONFIRMED and len(h.acks) == 1
    # non-INVITE without cookie
    h.layer.receive(request("OPTIONS", branch="", sent_by="192.0.2.20"))
    h.layer.receive(request("OPTIONS", branch="", sent_by="192.0.2.20"))
    assert [s.request.method for s in h.requests].count("OPTIONS") == 1


# ===================================================================== no leaks
def test_ten_thousand_mixed_transactions_leave_nothing_behind() -> None:
    h = Harness()
    h.auto = {"OPTIONS": 200, "MESSAGE": 202, "REGISTER": 401}
    layer = h.layer
    finals: list[int] = []

    def on_response(resp: Message) -> None:
        if resp.status >= 200:
            finals.append(resp.status)

    n = 10_000
    clients = 0
    for i in range(n):
        kind = i % 10
        branch = f"{COOKIE}mix{i}"
        src = TCP if i % 3 == 0 else UDP
        if kind in (0, 1, 2):  # server non-INVITE, TU answers at once
            method = ("OPTIONS", "MESSAGE", "REGISTER")[kind]
            layer.receive(request(method, branch, source=src))
            layer.receive(request(method, branch, source=src))  # retransmission
        elif kind == 3:  # server INVITE -> 486 -> ACK
            layer.receive(request("INVITE", branch, source=src))
            st_ = h.requests[-1]
            st_.respond(make_response(st_.request, 486, to_tag="u"))
            layer.receive(request("ACK", branch, source=src, to_tag="u"))
        elif kind == 4:  # server INVITE -> 200 (Accepted) or cancelled -> 487 without ACK
            layer.receive(request("INVITE", branch, source=src))
            st_ = h.requests[-1]
            if i % 20 == 4:
                st_.respond(make_response(st_.request, 200, to_tag="u"))
            else:
                layer.receive(request("CANCEL", branch, source=src))
                st_.respond(make_response(st_.request, 487, to_tag="u"))
        elif kind == 5:  # client non-INVITE answered
            msg = request("MESSAGE", new_branch(), source=None)
            layer.request(msg, DEST, on_response)
            clients += 1
            layer.receive(answer(msg, 200))
        elif kind == 6:  # client non-INVITE never answered -> Timer F
            layer.request(request("OPTIONS", new_branch(), source=None), DEST, on_response)
            clients += 1
        elif kind == 7:  # client INVITE: 180, cancel, 487
            inv = request("INVITE", new_branch(), source=None)
            ct = layer.request(inv, DEST if i % 2 else DEST_TCP, on_response)
            clients += 1
            layer.receive(answer(inv, 180))
            ct.cancel(REASON)
            layer.receive(answer(make_cancel(inv, REASON), 200))
            layer.receive(answer(inv, 487))
        elif kind == 8:  # client INVITE answered 200, then timed out ones
            inv = request("INVITE", new_branch(), source=None)
            layer.request(inv, DEST, on_response)
            clients += 1
            if i % 20 == 8:
                layer.receive(answer(inv, 200))
        else:  # strays and ACKs for nothing
            layer.receive(answer(request("INVITE", branch), 200))
            layer.receive(request("ACK", branch, to_tag="x"))
        if i % 1000 == 999:
            h.clock.advance(1.0)
            h.sent.clear()
    assert layer.counts()["server"] > 0 and layer.counts()["timers"] > 0
    h.clock.run_all()
    assert layer.counts() == {"server": 0, "client": 0, "timers": 0}
    assert h.clock.pending == 0
    assert len(finals) == clients  # exactly one final per client transaction


# ===================================================================== property
EVENTS = st.lists(
    st.sampled_from(["retrans", "1xx", "2xx", "4xx", "ack", "cancel", "tick", "fail", "ok"]),
    max_size=25,
)


@settings(max_examples=150, deadline=None, database=None)
@given(events=EVENTS, reliable=st.booleans(), invite=st.booleans())
def test_server_random_events_never_leak(events: list[str], reliable: bool, invite: bool) -> None:
    h = Harness()
    method = "INVITE" if invite else "MESSAGE"
    src = TCP if reliable else UDP
    h.layer.receive(request(method, source=src))
    if not h.requests:
        return
    for ev in events:
        tx = h.requests[-1]
        if ev == "retrans":
            h.layer.receive(request(method, source=src))
        elif ev in ("1xx", "2xx", "4xx"):
            status = {"1xx": 180, "2xx": 200, "4xx": 486}[ev]
            tx.respond(make_response(tx.request, status, to_tag="u"))
        elif ev == "ack":
            h.layer.receive(request("ACK", source=src, to_tag="u"))
        elif ev == "cancel":
            h.layer.receive(request("CANCEL", source=src))
        elif ev == "tick":
            h.clock.advance(3.0)
        else:
            h.fail = ev == "fail"
    # a retransmission only starts a new transaction once the previous one is gone
    # (reliable: Timer J/I = 0; or after a transport error). A completed non-INVITE
    # one over UDP leaves only its response's bytes in the layer: its object stays
    # Completed, and it was gone when the layer no longer held those bytes either.
    assert all(
        t.state is State.TERMINATED or (t.state is State.COMPLETED and not invite and
                                        not reliable)
        for t in h.requests[:-1]
    )  # fmt: skip
    h.fail = False
    for t in h.requests:  # the TU always answers in the end
        if t.state in (State.TRYING, State.PROCEEDING):
            t.respond(make_response(t.request, 500, to_tag="u"))
    h.clock.run_all()
    assert h.idle()


@settings(max_examples=150, deadline=None, database=None)
@given(events=EVENTS, reliable=st.booleans(), invite=st.booleans())
def test_client_random_events_one_final_no_leak(
    events: list[str], reliable: bool, invite: bool
) -> None:
    h = Harness()
    msg = outgoing("INVITE" if invite else "MESSAGE")
    dest = DEST_TCP if reliable else DEST
    ct, rec = client(h, msg, dest)
    for ev in events:
        if ev in ("1xx", "2xx", "4xx", "retrans"):
            status = {"1xx": 180, "2xx": 200, "4xx": 486, "retrans": 486}[ev]
            h.layer.receive(answer(msg, status, source=dest))
        elif ev == "cancel":
            ct.cancel()
        elif ev == "tick":
            h.clock.advance(7.0)
        elif ev == "ack":
            h.layer.receive(answer(make_cancel(msg), 200, source=dest))
        else:
            h.fail = ev == "fail"
    if ct.state is State.PROCEEDING and invite:
        ct.cancel()
    h.clock.run_all()
    finals = rec.finals
    synthesized_or_first = [s for s in finals if s != 200] or finals[:1]
    assert len(synthesized_or_first) == 1  # exactly one non-2xx final, or 2xx(s) only
    assert 200 not in finals or set(finals) == {200}
    assert h.idle()


def test_a_challenge_leaves_nothing_to_linger_a_copy_is_challenged_afresh() -> None:
    """401/407 are answered as a stateless UAS would (RFC 3261 §8.2.7): no Timer J for
    them; a retransmitted REGISTER reaches the TU again and gets a challenge of its own."""
    h = Harness()
    h.auto = {"REGISTER": 401}
    h.layer.receive(request("REGISTER"))
    assert [m.status for m in h.take()] == [401]
    assert h.idle()  # nothing kept
    h.layer.receive(request("REGISTER"))  # the copy of a REGISTER whose 401 was lost
    assert [m.status for m in h.take()] == [401] and len(h.requests) == 2
    assert h.idle()


def test_the_layer_says_when_the_last_lingering_transaction_has_gone() -> None:
    """(the server then gives the burst's memory back: sipwake.heap)"""
    h = Harness()
    drained: list[float] = []
    h.layer.on_drained = lambda: drained.append(h.clock.time())
    h.auto = {"OPTIONS": 200}
    h.layer.receive(request("OPTIONS", branch=f"{COOKIE}a"))
    h.clock.advance(1)
    h.layer.receive(request("OPTIONS", branch=f"{COOKIE}b"))
    h.clock.advance(64 * T1 - 0.5)  # the first has gone, the second not yet
    assert drained == [] and h.layer.counts()["server"] == 1
    h.clock.advance(1)
    assert drained == [pytest.approx(1 + 64 * T1 + J_GRAIN)] and h.idle()
