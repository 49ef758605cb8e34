"""Malformed SIP through a running server, over UDP and TCP: 400 (505 for another SIP
version) and a log line, never a crash, never a 200 (RFC 3261 §8.2.2, §18.3, §25.1;
RFC 4475 §3.1.2)."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from tests.helpers.agent import Agent, alive, answers
from tests.helpers.node import DOMAIN, Running
from tests.helpers.wait import wait_for

TRANSPORTS = ["udp", "tcp"]
_STATUS = re.compile(rb"SIP/2\.0 (\d{3}) ")


async def status_of(agent: Agent, data: bytes, branch: str) -> int:
    """Send raw bytes; the status of the final response that names `branch`."""
    agent.send_raw(data)

    def final() -> bytes | None:
        for resp in answers(agent, branch):
            m = _STATUS.match(resp)
            if m and int(m.group(1)) >= 200:
                return resp
        return None

    await wait_for(lambda: final() is not None)
    resp = final()
    assert resp is not None
    m = _STATUS.match(resp)
    assert m is not None
    return int(m.group(1))


async def unanswered(agent: Agent, data: bytes, branch: str) -> None:
    """Send raw bytes that must get no answer: by the time a following OPTIONS is
    answered over the same socket, nothing came back for `branch`."""
    agent.send_raw(data)
    await alive(agent)
    await asyncio.sleep(0.05)
    assert answers(agent, branch) == []


def request(
    agent: Agent,
    method: str = "OPTIONS",
    uri: str = f"sip:{DOMAIN}",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    version: str = "SIP/2.0",
) -> tuple[bytes, str]:
    data, branch = agent.build(method, uri, headers, body)
    if version != "SIP/2.0":
        line, rest = data.split(b"\r\n", 1)
        data = line.rsplit(b" ", 1)[0] + b" " + version.encode() + b"\r\n" + rest
    return data, branch


# ------------------------------------------------------------------- versions
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_request_in_another_sip_version_gets_505(
    running: Running, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await running.phone("alice", transport=transport)
    data, branch = request(phone, "INVITE", f"sip:x@{DOMAIN}", version="SIP/7.0")
    with caplog.at_level(logging.WARNING, logger="sipwake.sip.transport"):
        assert await status_of(phone, data, branch) == 505
    assert "SIP/7.0" in caplog.text
    # RFC 4475 §3.1.2.16 badvers: the Via speaks SIP/7.0 as well; the 505 goes back to
    # where the request came from
    data, branch = request(phone, version="SIP/7.0")
    data = data.replace(b"Via: SIP/2.0/", b"Via: SIP/7.0/")
    assert await status_of(phone, data, branch) == 505
    await alive(phone)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_response_in_another_sip_version_is_dropped_with_a_log_line(
    running: Running, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await running.phone("alice", transport=transport)
    data, branch = request(phone)
    _, rest = data.split(b"\r\n", 1)
    response = b"SIP/7.0 200 OK\r\n" + re.sub(rb"(\r\nTo: [^\r]*)", rb"\1;tag=1", rest, count=1)
    assert b";tag=1\r\n" in response
    with caplog.at_level(logging.WARNING, logger="sipwake.sip.transport"):
        await unanswered(phone, response, branch)
    assert "another version" in caplog.text
    assert running.server.transport.parse_errors == 1


# ---------------------------------------------------------- control characters
BAD_CONTROLS = {
    "nul-in-request-uri": ("uri", f"sip:a\x00b@{DOMAIN}"),
    "soh-in-request-uri": ("uri", f"sip:{DOMAIN}\x01"),
    "nul-in-subject": ("Subject", "a\x00b"),
    "soh-in-subject": ("Subject", "a\x01b"),
    "esc-in-subject": ("Subject", "\x1b[31mred"),
    "del-in-subject": ("Subject", "a\x7fb"),
    "vt-ending-subject": ("Subject", "a\x0b"),
    "lone-cr-in-subject": ("Subject", "a\rX-Injected: yes"),
    "nul-in-call-id": ("Call-ID", "abc\x00def@test"),
    "nul-in-from": ("From", f"<sip:alice@{DOMAIN}\x00>;tag=1"),
    "unescaped-soh-in-display-name": ("To", f'"A\x01" <sip:alice@{DOMAIN}>'),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", sorted(BAD_CONTROLS))
async def test_control_characters_get_400(
    running: Running, transport: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await running.phone("alice", transport=transport)
    where, value = BAD_CONTROLS[case]
    if where == "uri":
        data, branch = request(phone, uri=value)
    else:
        data, branch = request(phone, headers={where: value})
    with caplog.at_level(logging.WARNING, logger="sipwake.sip.transport"):
        assert await status_of(phone, data, branch) == 400
    assert "control character" in caplog.text
    await alive(phone)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_control_characters_where_the_grammar_allows_them(
    running: Running, transport: str
) -> None:
    """UTF-8 and HTAB in header values, a quoted-pair NUL (RFC 4475 §3.1.1.2 intmeth),
    anything in a body: all fine, the request is handled."""
    phone = await running.phone("alice", transport=transport)
    headers = {
        "To": f'"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:alice@{DOMAIN}>',
        "Subject": "caf\u00e9\tau lait \u5927\u505c\u96fb",
        "Content-Type": "application/octet-stream",
    }
    data, branch = request(phone, headers=headers, body=b"\x00\x01\r\x7f\x00\n")
    assert await status_of(phone, data, branch) == 200


# ---------------------------------------------------------------- method token
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "method", ["INV@ITE", "INVITE\x01", "INVITE\x00", "INV ITE", "INV(ITE)", "INVITÉ", "INVITE:"]
)
async def test_bad_method_token_gets_400(
    running: Running, transport: str, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await running.phone("alice", transport=transport)
    data, branch = request(phone, method, f"sip:bob@{DOMAIN}")
    with caplog.at_level(logging.WARNING, logger="sipwake.sip.transport"):
        assert await status_of(phone, data, branch) == 400
    assert "bad request line" in caplog.text
    await alive(phone)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_request_line_of_an_ack_gets_no_answer(running: Running, transport: str) -> None:
    phone = await running.phone("alice", transport=transport)
    data, branch = request(phone, "ACK", f"sip:bob@{DOMAIN} x")  # LWS in the Request-URI
    await unanswered(phone, data, branch)


# ------------------------------------------------------------- Content-Length
DOUBLE_LENGTHS = {
    "same": ({"Content-Length": "0"}, b""),
    "different": ({"l": "1"}, b"abc"),
    "compact-first": ({"l": "0"}, b""),
}


@pytest.mark.parametrize("case", sorted(DOUBLE_LENGTHS))
async def test_content_length_twice_gets_400_over_udp(
    running: Running, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await running.phone("alice")
    extra, body = DOUBLE_LENGTHS[case]
    data, branch = request(phone, headers=dict(extra), body=body)
    assert data.lower().count(b"\r\ncontent-length:") + data.count(b"\r\nl:") == 2
    with caplog.at_level(logging.WARNING, logger="sipwake.sip.transport"):
        assert await status_of(phone, data, branch) == 400
    assert "more than one Content-Length" in caplog.text
    await alive(phone)


@pytest.mark.parametrize("case", sorted(DOUBLE_LENGTHS))
async def test_content_length_twice_gets_400_and_the_stream_closed(
    running: Running, case: str
) -> None:
    """RFC 4475 §3.3.9 mcl01: on a stream the framing can't be trusted: 400, then the
    connection is closed, as for a missing Content-Length."""
    phone = await running.phone("alice", transport="tcp")
    extra, body = DOUBLE_LENGTHS[case]
    data, branch = request(phone, headers=dict(extra), body=body)
    following, follow_branch = request(phone)  # pipelined: never read as a message
    assert await status_of(phone, data + following, branch) == 400
    async with asyncio.timeout(5):
        await phone.closed.wait()
    assert answers(phone, follow_branch) == []
    # the server itself is fine
    await alive(await running.phone("alice", transport="tcp"))


# -------------------------------------------------------- numbers and others
NON_ASCII_DIGITS = {
    "cseq-superscript": ("CSeq: 1 OPTIONS", "CSeq: ² OPTIONS"),
    "cseq-arabic-indic": ("CSeq: 1 OPTIONS", "CSeq: ٣ OPTIONS"),
    "via-port-superscript": (";branch=", ":5²;branch="),
    "max-forwards-superscript": ("Max-Forwards: 70", "Max-Forwards: ²"),
    "content-length-arabic-indic": ("Content-Length: 0", "Content-Length: ٠"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", sorted(NON_ASCII_DIGITS))
async def test_non_ascii_digits_get_400_not_a_crash(
    running: Running, transport: str, case: str
) -> None:
    phone = await running.phone("alice", transport=transport)
    data, branch = request(phone)
    old, new = NON_ASCII_DIGITS[case]
    if old == ";branch=":  # the port goes on the sent-by of our Via
        host, port = phone.local
        old, new = f"{host}:{port};branch=", f"{host}:{port}²;branch="
    assert old.encode() in data
    data = data.replace(old.encode(), new.encode(), 1)
    assert await status_of(phone, data, branch) == 400
    if case == "content-length-arabic-indic" and transport == "tcp":
        return  # framing unreadable: the connection is closed after the 400
    await alive(phone)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_answers_to_malformed_requests_carry_a_to_tag(
    running: Running, transport: str
) -> None:
    """RFC 3261 §8.2.6.2: a UAS's final response gets a To tag, also a 400 or 505."""
    phone = await running.phone("alice", transport=transport)
    for data, branch in (
        request(phone, "INV@ITE"),
        request(phone, version="SIP/7.0"),
        request(phone, headers={"Subject": "\x00"}),
    ):
        await status_of(phone, data, branch)
        (resp,) = answers(phone, branch)
        to = next(line for line in resp.split(b"\r\n") if line.startswith(b"To:"))
        assert b";tag=" in to


FRAMING = {
    b"l: 5": 5,
    b"Content-Length  :  12 ": 12,
    b"CONTENT-LENGTH:0\r\nVia: x": 0,
    b"Content-Length: 123456789": 123456789,
    b"l: 5\r\nContent-Length: 5": None,  # twice, even alike
    b"l: 5\r\nl: 6": None,
    b"Subject: a\r\n l: 5": None,  # a continuation line, not a header
    b"Subject: a\r\n l: 5\r\nl: 0": 0,
    b"lr: 5": None,
    b"Content-Lengthy: 5": None,
    b"Content-Length: -1": None,
    b"Content-Length: +1": None,
    "Content-Length: ٣".encode(): None,
    b"Content-Length: 1234567890": None,
    b"Via: a": None,
}


@pytest.mark.parametrize("head", list(FRAMING))
def test_stream_framing_takes_exactly_one_content_length(head: bytes) -> None:
    from sipwake.sip.transport import _content_length

    assert _content_length(b"OPTIONS sip:x SIP/2.0\r\n" + head) == FRAMING[head]
