"""SIGTERM (DESIGN "Stopping"), on the installed `sipwake serve`: parked callers get a
final answer, a MESSAGE in flight gets its answer, a phone's 2xx to a delivery in flight
is kept, the process exits within 10 s — and after the restart nothing is delivered
twice and nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

from sipwake.sip.message import Message
from tests.helpers.agent import Agent, Dialer, respond
from tests.helpers.wait import wait_for
from tests.served import DOMAIN, Served, serve

FCM = ";pn-provider=fcm;pn-prid=fcm-stop-1;pn-param=stop-project"
CAROL = ';+sip.instance="<urn:uuid:00000000-0000-4000-8000-00000000ca01>"'
OFFER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
USERS = (("alice", "secret"), ("bob", "secret"), ("carol", "secret"))
TOML = f"""
[sip]
domain = "{DOMAIN}"
listen = ["udp:127.0.0.1:0"]
secret = "stop"
[http]
listen = "127.0.0.1:0"
[calls]
park_timeout = 60
"""


async def phone(served: Served, user: str) -> Agent:
    return await Agent(user, "secret", DOMAIN, served.sip["udp"]).start()


async def messages_to(
    agent: Agent, count: int, answer: bool = False, timeout: float = 10
) -> list[Message]:
    """The first `count` MESSAGEs delivered to `agent` (retransmissions once), answered
    200 as they come when `answer`, else left unanswered (a window's worth at most)."""
    got: list[Message] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            req = await agent.requests.get()
            if req.method == "MESSAGE" and all(m.call_id != req.call_id for m in got):
                got.append(req)
                if answer:
                    respond(agent, req, 200)
    return got


async def test_sigterm_answers_everyone_and_loses_or_repeats_nothing(tmp_path: Path) -> None:
    served = await serve(tmp_path, TOML, users=USERS)
    try:
        alice = await phone(served, "alice")  # her app uploads a token, then sleeps
        assert (await alice.register(FCM, expires=0)).status == 200
        bob = await phone(served, "bob")
        texts = [f"message {i}".encode() for i in range(12)]
        for text in texts:
            sent = await bob.request("MESSAGE", f"sip:carol@{DOMAIN}",
                                     {"Content-Type": "text/plain"}, text)
            assert sent.status == 202
        # five parked calls, each ringing
        dials = []
        for n in range(5):
            caller = await phone(served, "bob")
            caller.call_id = f"parked-{n}@stop"
            dial = Dialer(caller, f"sip:alice@{DOMAIN}", OFFER)
            await dial.start_authenticated()
            await dial.provisional(180)
            dials.append(dial)
        # carol's phone registers: the first window of her backlog comes, unanswered yet
        carol = await phone(served, "carol")
        assert (await carol.register(header_params=CAROL)).status == 200
        first = await messages_to(carol, 4)
        # one more MESSAGE for carol: it waits behind the window, its sender for a 2xx
        late = asyncio.ensure_future(bob.request(
            "MESSAGE", f"sip:carol@{DOMAIN}", {"Content-Type": "text/plain"}, b"late one",
            timeout=15,
        ))  # fmt: skip
        await wait_for(lambda: stored(tmp_path) == len(texts) + 1)  # in, committed, waiting

        stopping = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        for dial in dials:
            final = await dial.final(timeout=5)
            assert final.status == 503 and final.get("Retry-After"), final.status
        assert (await late).status == 202  # stored: the next process delivers it
        for msg in first:  # the phone answers what it got, while the server stops
            respond(carol, msg, 200)
        code = await served.stop(timeout=12)
        assert code == 0 and time.monotonic() - stopping < 10
        log = "\n".join(served.log)
        assert "Traceback" not in log and "5 ringing calls answered 503" in log

        again = await serve(tmp_path, TOML, users=USERS)
        try:
            carol2 = await phone(again, "carol")
            assert (await carol2.register(header_params=CAROL)).status == 200
            rest = await messages_to(carol2, 9, answer=True)
            delivered = [m.body for m in first] + [m.body for m in rest]
            assert sorted(delivered) == sorted([*texts, b"late one"])  # all, each once
            # nothing more comes: a second REGISTER finds the backlog empty
            assert (await carol2.register(header_params=CAROL)).status == 200
            assert (await carol2.request("OPTIONS", f"sip:{DOMAIN}")).status == 200
            assert not any(m.method == "MESSAGE" for m in _drain(carol2))
        finally:
            await again.stop()
    finally:
        if served.proc.returncode is None:
            await served.stop()


def stored(folder: Path) -> int:
    """Messages in the server's SQLite inbox, read from outside (WAL: no lock taken)."""
    with sqlite3.connect(f"file:{folder / 'sipwake.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])


def _drain(agent: Agent) -> list[Message]:
    out = []
    while not agent.requests.empty():
        out.append(agent.requests.get_nowait())
    return out
