"""RFC 4475 torture tests: the parser, then each message through a running server."""

from __future__ import annotations

import asyncio
import re

import pytest

from sipwake.sip.errors import SipParseError
from sipwake.sip.message import parse
from tests.helpers.agent import Agent, alive, answers
from tests.helpers.node import Running
from tests.helpers.rfc4475 import MALFORMED, MESSAGES, WELL_FORMED
from tests.helpers.wait import wait_for

_TOP_VIA = re.compile(rb"(?im)^(?:via|v)\s*:\s*SIP\s*/\s*\d\.\d\s*/\s*\w+\s+([^;,\s]+)")
_BRANCH = re.compile(rb"(?i)branch\s*=\s*([^;,\s]*)")

# What a running sipwake answers each (over UDP): a status; None for nothing (responses,
# and what has no readable Via); HANDLED for a request that got through the SIP core to a
# service, whose answer is policy (admission, routing), not parsing: any final answer but
# 400, 500 or 505. Where the RFC leaves a choice, the comment says which we make.
HANDLED = 0
EXPECTED: dict[str, int | None] = {
    "wsinv": HANDLED,
    "intmeth": 405,
    "esc01": HANDLED,
    "escnull": 401,
    "esc02": 405,  # RE%47IST%45R is not REGISTER
    "lwsdisp": 200,
    "longreq": HANDLED,
    "dblreq": 401,  # the REGISTER; the INVITE after it in the datagram is noise
    "semiuri": 200,
    "transports": 200,
    "mpart01": HANDLED,
    "unreason": None,
    "noreason": None,
    "badbranch": 200,
    "bcast": None,  # a stray response: never forwarded, least of all to 255.255.255.255
    "zeromf": 200,  # OPTIONS is answered by us, not forwarded
    "cparam01": 401,
    "cparam02": 401,
    "regescrt": 401,
    "regaut01": 401,
    "escruri": HANDLED,  # liberal: a forwarded INVITE gets a binding's URI, headers and all
    "baddate": HANDLED,  # liberal: Date is never read
    "badaspec": 200,  # liberal: spaces around the addr-spec ignored
    "inv2543": HANDLED,
    "unkscm": 416,  # RFC 4475 §3.3.2
    "novelsc": 416,  # §3.3.3
    "unksm2": HANDLED,  # RFC 4475 §3.3.4 hopes for 400 or 416: any refusal will do
    "bext01": 420,  # RFC 4475 §3.3.5
    "invut": HANDLED,  # a proxy forwards bodies it does not understand
    "sdp01": HANDLED,
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": None,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,  # not liberal: 400, as the RFC allows
    "trws": 400,  # idem
    "regbadct": 401,  # challenged first; its Contact is read (400) once authenticated
    "baddn": 200,  # liberal: the missing quotes are inferred
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": None,
    "insuf": 400,
    "multi01": 400,
    "mcl01": 400,
}


def test_every_message_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(MESSAGES)


@pytest.mark.parametrize("name", sorted(WELL_FORMED))
def test_well_formed_messages_parse(name: str) -> None:
    m = parse(WELL_FORMED[name][1])
    if m.method:
        m.request_uri  # noqa: B018
    m.contacts  # noqa: B018
    assert parse(m.to_bytes()).to_bytes() == m.to_bytes()  # what we write, we read back


@pytest.mark.parametrize("name", sorted(name for name in MALFORMED if name != "baddn"))
def test_malformed_messages_raise_parse_error(name: str) -> None:
    with pytest.raises(SipParseError):
        m = parse(MALFORMED[name][1])
        m.contacts  # noqa: B018 - lazily parsed, still a clean error
        m.int_header("Expires")


def aimed_at(agent: Agent, data: bytes) -> tuple[bytes, str]:
    """The message with its top Via's sent-by pointing at `agent` (answers over UDP go
    to the sent-by port, RFC 3261 §18.2.2), and that Via's branch."""
    m = _TOP_VIA.search(data)
    assert m is not None
    host, port = agent.local
    data = data[: m.start(1)] + f"{host}:{port}".encode() + data[m.end(1) :]
    branch = _BRANCH.search(data, m.start())
    return data, (branch.group(1).decode() if branch and branch.group(1) else "")


def finals(agent: Agent, data: bytes, branch: str) -> list[int]:
    """Statuses of the final responses to `data` so far: by branch, or without one
    (RFC 2543 style) by Call-ID."""
    if branch:
        got = answers(agent, branch)
    else:
        m = re.search(rb"(?im)^(?:call-id|i)\s*:\s*(\S+)", data)
        assert m is not None
        got = [r for r in agent.wire if r.startswith(b"SIP/") and m.group(1) in r]
    return [int(r[8:11]) for r in got if int(r[8:11]) >= 200]


@pytest.mark.parametrize("name", sorted(MESSAGES))
async def test_answers_over_udp(running: Running, name: str) -> None:
    await running.add_user("user")
    phone = await running.phone("probe")
    data, branch = aimed_at(phone, MESSAGES[name][1])
    phone.send_raw(data)
    expected = EXPECTED[name]
    if expected is None:
        await alive(phone)  # anything for the torture message is back before this
    else:
        await wait_for(lambda: bool(finals(phone, data, branch)))
    await asyncio.sleep(0.05)
    got = finals(phone, data, branch)
    if expected == HANDLED:
        assert len(got) == 1 and got[0] not in (400, 500, 505), (name, got)
    else:
        assert got == ([] if expected is None else [expected]), name


# The router checks the Request-URI scheme and Require/Proxy-Require before any service.
@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
async def test_unknown_uri_schemes(running: Running, name: str) -> None:
    phone = await running.phone("probe")
    data, branch = aimed_at(phone, MESSAGES[name][1])
    phone.send_raw(data)
    await wait_for(lambda: bool(finals(phone, data, branch)))
    assert finals(phone, data, branch) == [416]  # RFC 4475 §3.3.2, §3.3.3


async def test_unsupported_require(running: Running) -> None:
    phone = await running.phone("probe")
    data, branch = aimed_at(phone, MESSAGES["bext01"][1])
    phone.send_raw(data)
    await wait_for(lambda: bool(finals(phone, data, branch)))
    assert finals(phone, data, branch) == [420]  # RFC 4475 §3.3.5, with Unsupported
