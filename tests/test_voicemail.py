"""Voicemail over SIP: a voicemail server's MWI NOTIFYs (RFC 3842) and who may send
them, the pushes they cause, and devices subscribing to their mailbox (RFC 6665)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwake.store.models import InboxMessage
from sipwake.voicemail.summary import Counts, parse
from tests.helpers.node import DOMAIN, Running, ServerFactory
from tests.helpers.sipp import run_sipp
from tests.helpers.voicemail import (
    CT,
    Subscriber,
    add_ios_device,
    build,
    next_request,
    notify,
    respond,
    send,
    summary,
    voicemail_pushes,
)

ALICE = f"sip:alice@{DOMAIN}"
SCENARIOS = Path(__file__).parent / "sipp"


@pytest.fixture
async def trusted(start_server: ServerFactory) -> Running:
    """A server that trusts 127.0.0.1 as its voicemail system, with user alice."""
    r = await start_server(sip={"trusted_peers": ["127.0.0.1/32"]})
    await r.add_user("alice")
    return r


@pytest.fixture
async def notifier(start_server: ServerFactory) -> Running:
    """A server whose voicemail system authenticates as user vm (nobody is trusted by
    address), with users alice and vm."""
    r = await start_server(sip={"min_expires": 1}, voicemail={"notifiers": ["vm"]})
    await r.add_user("alice")
    await r.add_user("vm")
    return r


# ------------------------------------------------------------------------ MWI in
async def test_trusted_notify_stores_state_and_pushes_once_per_new_voicemail(
    trusted: Running,
) -> None:
    r = trusted
    await add_ios_device(r, "alice")
    await add_ios_device(r, "alice", "old-phone", enabled=False)
    vm = await r.phone("voicemail")  # not a user: trusted by its address
    resp = await notify(vm, "alice", summary(1, 0))
    assert resp.status == 200 and resp.to_tag
    m = await r.server.store.get_mailbox(ALICE)  # stored before the 200
    assert m is not None
    assert (m.waiting, m.account, m.new_count, m.old_count) == (
        True, "sip:vm@vm.example.com", 1, 0)  # fmt: skip
    assert (m.last_from_uri, m.last_from_name, m.last_duration) == (
        "sip:+15551234@example.com", "Bob Builder", 42)  # fmt: skip
    await r.server.voicemail.settled()
    (push,) = voicemail_pushes(r)  # the disabled device gets nothing
    assert push["device_id"] == "iphone"
    payload = push["payload"]
    assert isinstance(payload, dict)
    assert {k: payload[k] for k in ("type", "from_uri", "from_name", "duration", "new", "old")} \
        == {"type": "voicemail", "from_uri": "sip:+15551234@example.com",
            "from_name": "Bob Builder", "duration": 42, "new": 1, "old": 0}  # fmt: skip
    assert payload["aps"]["badge"] == 1  # unread messages + new voicemails

    # the same state again, then only the old count changing, then new dropping: no push
    for body in (summary(1, 0), summary(1, 1), summary(0, 2)):
        assert (await notify(vm, "alice", body)).status == 200
    await r.server.voicemail.settled()
    assert len(voicemail_pushes(r)) == 1
    m = await r.server.store.get_mailbox(ALICE)
    assert m is not None and (m.waiting, m.new_count, m.old_count) == (False, 0, 2)

    # the next voicemail: one more push, with this caller (no name, no duration given)
    body = summary(1, 2, caller="<sip:carol@example.com>", duration=None)
    assert (await notify(vm, "alice", body)).status == 200
    await r.server.voicemail.settled()
    pushes = voicemail_pushes(r)
    assert len(pushes) == 2
    second = pushes[1]["payload"]
    assert isinstance(second, dict)
    assert (second["from_uri"], second["from_name"], second["duration"], second["new"],
            second["old"]) == ("sip:carol@example.com", "", 0, 1, 2)  # fmt: skip


async def test_badge_counts_unread_messages_and_new_voicemails(trusted: Running) -> None:
    await add_ios_device(trusted, "alice")
    store = trusted.server.store
    for n in range(2):
        await store.add_message(InboxMessage(
            id=0, aor=ALICE, dedup_key=f"m{n}", from_uri="sip:bob@example.com",
            from_name="Bob", content_type="text/plain", body=b"hi"))  # fmt: skip
    vm = await trusted.phone("voicemail")
    assert (await notify(vm, "alice", summary(3, 0))).status == 200
    await trusted.server.voicemail.settled()
    (push,) = voicemail_pushes(trusted)
    assert push["payload"]["aps"]["badge"] == 2 + 3  # type: ignore[index]


async def test_untrusted_notify_is_refused_and_nothing_is_stored(
    start_server: ServerFactory,
) -> None:
    r = await start_server(sip={"trusted_peers": ["192.0.2.0/24"]})  # not 127.0.0.1
    await r.add_user("alice")
    await add_ios_device(r, "alice")
    vm = await r.phone("voicemail")
    resp = await notify(vm, "alice", summary(3, 0))
    assert resp.status == 403 and "untrusted" in resp.reason
    assert await r.server.store.get_mailbox(ALICE) is None
    await r.server.voicemail.settled()
    assert voicemail_pushes(r) == []


async def test_notifier_user_authenticates_by_digest(notifier: Running) -> None:
    r = notifier
    await r.add_user("mallory")
    vm = await r.phone("vm")
    # without credentials: a challenge (the voicemail system answers it)
    data, branch = build(vm, "NOTIFY", ALICE, to=f"<{ALICE}>", call_id="c1@test",
                         headers={"Event": "message-summary", "Content-Type": CT},
                         body=summary(2, 0))  # fmt: skip
    resp = await vm._transact(data, branch, 5.0)
    assert resp.status == 407 and resp.get("Proxy-Authenticate")
    assert await r.server.store.get_mailbox(ALICE) is None

    assert (await notify(vm, "alice", summary(2, 0))).status == 200
    # a user who is not a notifier, and a notifier with the wrong password
    mallory = await r.phone("mallory")
    resp = await notify(mallory, "alice", summary(9, 9))
    assert resp.status == 403 and "not a voicemail notifier" in resp.reason
    impostor = await r.phone("vm", password="guess")
    assert (await notify(impostor, "alice", summary(9, 9))).status == 403
    m = await r.server.store.get_mailbox(ALICE)
    assert m is not None and (m.new_count, m.old_count) == (2, 0)


async def test_malformed_summaries_get_400_with_the_reason_and_store_nothing(
    trusted: Running,
) -> None:
    vm = await trusted.phone("voicemail")
    cases = [
        (b"", "empty message-summary body"),
        (b"Voice-Message: 1/0\r\n", "missing Messages-Waiting"),
        (b"Messages-Waiting: perhaps\r\n", "Messages-Waiting must be yes or no"),
        (b"Messages-Waiting: yes\r\nVoice-Message: many/0\r\n", "bad Voice-Message"),
        (b"Messages-Waiting: yes\r\nno colon here\r\n", "bad summary line"),
    ]
    for body, reason in cases:
        resp = await notify(vm, "alice", body)
        assert resp.status == 400, body
        assert resp.reason.startswith("Bad Request (") and reason in resp.reason, resp.reason
    resp = await notify(vm, "alice", b"<xml/>", {"Content-Type": "application/xml"})
    assert resp.status == 415 and resp.get("Accept") == CT
    assert await trusted.server.store.get_mailbox(ALICE) is None


async def test_notify_refusals(trusted: Running) -> None:
    vm = await trusted.phone("voicemail")
    assert (await notify(vm, "nobody", summary(1, 0))).status == 404
    other = "sip:alice@elsewhere.example.org"
    resp = await send(vm, "NOTIFY", other, to=f"<{other}>", body=summary(1, 0),
                      headers={"Event": "message-summary", "Content-Type": CT})  # fmt: skip
    assert resp.status == 404
    for event in ({"Event": "presence"}, {"Event": ""}):
        resp = await notify(vm, "alice", summary(1, 0), event)
        assert resp.status == 489 and resp.get("Allow-Events") == "message-summary"
    assert await trusted.server.store.get_mailbox(ALICE) is None


async def test_sipp_voicemail_server(trusted: Running, tmp_path: Path) -> None:
    """SIPp (an independent SIP stack) as the voicemail server: a summary → 200 and a
    push, a malformed one → 400 naming the bad line."""
    await add_ios_device(trusted, "alice")
    code, out = await run_sipp(
        trusted.addr("udp"),
        ["-sf", str(SCENARIOS / "voicemail_notify.xml"), "-m", "1", "-t", "u1"],
        tmp_path,
    )
    errors = "".join(p.read_text() for p in tmp_path.glob("*_errors.log"))
    assert code == 0, out[-2000:] + errors[-2000:]
    m = await trusted.server.store.get_mailbox(ALICE)
    assert m is not None and (m.new_count, m.old_count, m.last_duration) == (1, 4, 17)
    await trusted.server.voicemail.settled()
    (push,) = voicemail_pushes(trusted)
    assert push["payload"]["from_name"] == "SIPp Caller"  # type: ignore[index]


# ---------------------------------------------------------------- SUBSCRIBE/NOTIFY
async def test_device_subscribes_hears_changes_refreshes_and_unsubscribes(
    notifier: Running,
) -> None:
    r = notifier
    vm = await r.phone("vm")
    assert (await notify(vm, "alice", summary(1, 3))).status == 200
    phone = await r.phone("alice")
    assert (await phone.register()).status == 200
    sub = Subscriber(phone)

    resp = await sub.subscribe(600)
    assert resp.status == 200 and resp.to_tag and resp.get("Expires") == "600"
    assert resp.contacts  # the notifier's Contact: the dialog's remote target
    first = await sub.notified()  # the current state, at once
    assert first.get("Event") == "message-summary" and first.get("Content-Type") == CT
    state = first.get("Subscription-State") or ""
    assert state.startswith("active;expires=") and 590 <= int(state.split("=")[1]) <= 600
    s = parse(first.body)
    assert (s.waiting, s.voice) == (True, Counts(1, 3))

    # a change reaches the subscriber in its dialog, and only there
    assert (await notify(vm, "alice", summary(2, 3))).status == 200
    change = await sub.notified()
    assert parse(change.body).voice == Counts(2, 3)
    assert change.cseq[0] == first.cseq[0] + 1
    await r.server.voicemail.settled()
    assert phone.requests.empty()  # no unsolicited copy to the subscribed phone

    # refresh: new expiry, the state again
    resp = await sub.subscribe(300)
    assert resp.status == 200 and resp.get("Expires") == "300"
    again = await sub.notified()
    assert (again.get("Subscription-State") or "").startswith("active;expires=")
    assert parse(again.body).voice == Counts(2, 3)

    # unsubscribe: a final NOTIFY, and the dialog is gone
    resp = await sub.subscribe(0)
    assert resp.status == 200 and resp.get("Expires") == "0"
    final = await sub.notified()
    assert final.get("Subscription-State") == "terminated;reason=timeout"
    assert r.server.voicemail.subscriptions.count() == 0
    assert (await sub.subscribe(600)).status == 481

    # not subscribed any more, still registered: changes come as unsolicited NOTIFYs
    assert (await notify(vm, "alice", summary(0, 5))).status == 200
    unsolicited = await next_request(phone)
    respond(phone, unsolicited)
    assert not unsolicited.to_tag and unsolicited.get("Subscription-State") == "terminated"
    s = parse(unsolicited.body)
    assert (s.waiting, s.voice) == (False, Counts(0, 5))


async def test_subscription_expires_with_a_terminated_notify(notifier: Running) -> None:
    phone = await notifier.phone("alice")
    sub = Subscriber(phone)
    resp = await sub.subscribe(1)
    assert resp.status == 200 and resp.get("Expires") == "1"
    first = await sub.notified()
    assert (first.get("Subscription-State") or "").startswith("active;expires=")
    assert parse(first.body).waiting is False  # no state reported yet: nothing waiting
    final = await sub.notified(timeout=5)
    assert final.get("Subscription-State") == "terminated;reason=timeout"
    assert notifier.server.voicemail.subscriptions.count() == 0
    assert (await sub.subscribe(60)).status == 481


async def test_subscribe_is_authenticated_and_only_to_your_own_mailbox(
    notifier: Running,
) -> None:
    r = notifier
    await r.add_user("bob")
    phone = await r.phone("alice")
    headers = {"Event": "message-summary", "Contact": phone.contact(), "Expires": "600"}
    data, branch = build(phone, "SUBSCRIBE", ALICE, to=f"<{ALICE}>", call_id="s1@test",
                         headers=headers)  # fmt: skip
    resp = await phone._transact(data, branch, 5.0)
    assert resp.status == 407 and resp.get("Proxy-Authenticate")

    resp = await Subscriber(phone, "bob").subscribe()
    assert resp.status == 403 and "not your mailbox" in resp.reason
    resp = await Subscriber(phone).subscribe(Event="presence")
    assert resp.status == 489 and resp.get("Allow-Events") == "message-summary"
    resp = await Subscriber(phone).subscribe(Accept="application/pidf+xml")
    assert resp.status == 406 and resp.get("Accept") == CT
    r.server.voicemail.subscriptions.min_expires = 60
    resp = await Subscriber(phone).subscribe(30)
    assert resp.status == 423 and resp.get("Min-Expires") == "60"
    resp = await Subscriber(phone).subscribe(Contact="*")
    assert resp.status == 400
    assert r.server.voicemail.subscriptions.count() == 0
    assert phone.requests.empty()  # no NOTIFY for any refused SUBSCRIBE


async def test_refused_notify_ends_the_subscription(notifier: Running) -> None:
    phone = await notifier.phone("alice")
    sub = Subscriber(phone)
    assert (await sub.subscribe(600)).status == 200
    await sub.notified(status=481)  # the device lost the dialog
    await notifier.server.voicemail.settled()
    assert notifier.server.voicemail.subscriptions.count() == 0


async def test_trusted_peer_subscribes_for_the_user_in_from(trusted: Running) -> None:
    """[sip] trusted_peers (an SBC in front of the phones) are not challenged."""
    phone = await trusted.phone("alice")
    sub = Subscriber(phone)
    assert (await sub.subscribe(600)).status == 200
    assert parse((await sub.notified()).body).waiting is False
    resp = await Subscriber(phone, "bob").subscribe()
    assert resp.status == 403


async def test_registered_phone_gets_unsolicited_notify_without_push_params(
    trusted: Running,
) -> None:
    phone = await trusted.phone("alice")
    pn = ";pn-provider=apns;pn-prid=" + "cd" * 32 + ";pn-param=ABCD123456.com.example.dialer.voip"
    assert (await phone.register(params=pn)).status == 200
    vm = await trusted.phone("voicemail")
    assert (await notify(vm, "alice", summary(3, 1))).status == 200
    request = await next_request(phone)
    respond(phone, request)
    assert "pn-" not in request.uri and request.request_uri.user == "alice"
    assert request.get("Event") == "message-summary" and request.get("Content-Type") == CT
    assert not request.to_tag  # out of dialog, as Asterisk sends unsolicited MWI
    s = parse(request.body)
    assert (s.waiting, s.account, s.voice) == (True, "sip:vm@vm.example.com", Counts(3, 1))
    await trusted.server.voicemail.settled()
