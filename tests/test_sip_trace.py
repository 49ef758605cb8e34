"""[log] sip_trace: every SIP message in and out on sipwake.sip.trace, with the
credentials and push tokens cut out and the body as its length only."""

from __future__ import annotations

import logging

import pytest

from sipwake.sip.peer import Peer
from sipwake.sip.trace import describe, redact
from tests.helpers.node import ServerFactory

TOKEN = "a1" * 32
PARAMS = f";pn-provider=apns;pn-prid={TOKEN};pn-param=ABCD123456.com.example.dialer.voip"


def test_redact_keeps_scheme_and_user_drops_the_rest() -> None:
    head = (
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b'Authorization: Digest username="alice", realm="example.com", nonce="n", '
        b'response="0123456789abcdef"\r\n'
        b"proxy-authorization:Basic YWxpY2U6c2VjcmV0\r\n"
        b"Contact: <sip:alice@10.0.0.1;pn-provider=fcm;pn-prid=dK3x:APA91b-tok_1;pn-param=p>\r\n"
        b"Contact: <sip:alice@10.0.0.1;PN-PRID=" + TOKEN.encode() + b":remote&ff:voip>"
    )
    out = redact(head).decode()
    assert 'Authorization: Digest username="alice" <redacted>' in out
    assert "proxy-authorization: Basic <redacted>" in out
    assert "0123456789abcdef" not in out and "YWxpY2U6c2VjcmV0" not in out
    assert "APA91b" not in out and TOKEN not in out and "ff:voip" not in out
    assert out.count("<redacted>") == 4
    assert "pn-provider=fcm;pn-prid=<redacted>;pn-param=p" in out


def test_describe_gives_first_line_headers_and_body_length() -> None:
    data = (b"MESSAGE sip:bob@example.com SIP/2.0\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 12\r\n\r\nsecret words")  # fmt: skip
    line, fields = describe("out", data, Peer("tcp", "127.0.0.1", 5070, "tcp-1"))
    assert line.splitlines()[0] == "out -> tcp:127.0.0.1:5070 (12 body bytes)"
    assert line.splitlines()[1] == "MESSAGE sip:bob@example.com SIP/2.0"
    assert "secret words" not in line
    assert fields == {
        "direction": "out", "transport": "tcp", "peer": "tcp:127.0.0.1:5070",
        "first_line": "MESSAGE sip:bob@example.com SIP/2.0", "body_length": 12,
    }  # fmt: skip


@pytest.mark.parametrize("trace", [True, False])
async def test_a_register_traced_both_ways(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture, trace: bool
) -> None:
    caplog.set_level(logging.INFO, logger="sipwake.sip.trace")
    r = await start_server(log={"sip_trace": trace})
    await r.add_user("alice")
    phone = await r.phone("alice", transport="tcp")
    assert (await phone.register(params=PARAMS)).status == 200
    records = [rec for rec in caplog.records if rec.name == "sipwake.sip.trace"]
    if not trace:
        assert records == []
        return
    seen = [(rec.__dict__["direction"], rec.__dict__["first_line"]) for rec in records]
    assert seen == [
        ("in", "REGISTER sip:example.com SIP/2.0"),
        ("out", "SIP/2.0 401 Unauthorized"),
        ("in", "REGISTER sip:example.com SIP/2.0"),
        ("out", "SIP/2.0 200 OK"),
    ]
    assert all(rec.__dict__["transport"] == "tcp" for rec in records)
    text = "\n".join(rec.getMessage() for rec in records)
    assert TOKEN not in text and 'response="' not in text
    assert "Authorization: Digest username=\"alice\" <redacted>" in text
    assert "WWW-Authenticate: Digest" in text  # a challenge is no secret
