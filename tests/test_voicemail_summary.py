"""RFC 3842 message-summary bodies: what is accepted, what is refused and why."""

from __future__ import annotations

import pytest

from sipwake.voicemail.summary import (
    Caller,
    Counts,
    SummaryError,
    caller,
    parse,
    parse_duration,
    render,
)


def test_rfc3842_example() -> None:
    body = (
        b"Messages-Waiting: yes\r\n"
        b"Message-Account: sip:alice@vmail.example.com\r\n"
        b"Voice-Message: 4/8 (1/2)\r\n"
        b"\r\n"
        b"To: <alice@atlanta.example.com>\r\n"
        b"From: <bob@biloxi.example.com>\r\n"
        b"Subject: carpool tomorrow?\r\n"
        b"Date: Sun, 09 Jan 2005 13:15:49 -0500\r\n"
        b"Priority: normal\r\n"
        b"Message-ID: 13939393@vmail.example.com\r\n"
    )
    s = parse(body)
    assert s.waiting is True
    assert s.account == "sip:alice@vmail.example.com"
    assert s.voice == Counts(4, 8, 1, 2)
    assert s.headers["subject"] == "carpool tomorrow?"
    assert s.headers["date"] == "Sun, 09 Jan 2005 13:15:49 -0500"
    # a From without a URI scheme (as in the RFC's example) is kept as written
    assert caller(s) == Caller("bob@biloxi.example.com", "", 0)


def test_minimal_and_lenient_forms() -> None:
    assert parse(b"Messages-Waiting: no") == parse(b"messages-waiting:NO\n")
    s = parse(b"Messages-Waiting: yes\nVoice-Message: 2/0\nFax-Message: 1/1 (0/0)\n")
    assert s.voice == Counts(2, 0, 0, 0)  # urgent counts are optional
    s = parse(b"Messages-Waiting: yes\r\nX-Future-Class: whatever\r\n")
    assert s.voice is None  # unknown summary lines are skipped


def test_caller_and_duration_from_message_headers() -> None:
    body = (
        b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n\r\n"
        b'From: "Bob Builder" <sip:+15551234@example.com>\r\n'
        b"Content-Duration: 42\r\n"
        b"\r\n"
        b"From: <sip:older@example.com>\r\n"  # the next message's block: ignored
    )
    assert caller(parse(body)) == Caller("sip:+15551234@example.com", "Bob Builder", 42)
    body = b"Messages-Waiting: yes\n\nFrom: Carol <sip:carol@example.com>\nX-Duration: 1:05\n"
    assert caller(parse(body)) == Caller("sip:carol@example.com", "Carol", 65)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("42", 42), (" 42 ", 42), ("41.6", 42), ("1:05", 65), ("1:02:03", 3723),
     ("forty", 0), ("-3", 0), ("nan", 0), ("1e99", 0), ("", 0)],
)  # fmt: skip
def test_duration_forms(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty message-summary body"),
        (b"   \r\n", "empty message-summary body"),
        (b"Voice-Message: 1/0\r\n", "missing Messages-Waiting"),
        (b"Messages-Waiting: maybe\r\n", "Messages-Waiting must be yes or no"),
        (b"Messages-Waiting: yes\r\nMessages-Waiting: no\r\n", "more than one Messages-Waiting"),
        (b"Messages-Waiting: yes\r\nVoice-Message: lots/few\r\n", "bad Voice-Message"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/2 (3)\r\n", "bad Voice-Message"),
        (b"Messages-Waiting: yes\r\nVoice-Message: -1/0\r\n", "bad Voice-Message"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/0\r\n", "bad Voice-Message"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 4294967296/0\r\n", "out of range"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\nVoice-Message: 2/0\r\n",
         "more than one Voice-Message"),
        (b"Messages-Waiting: yes\r\nMessage-Account: not a uri\r\n", "bad Message-Account"),
        (b"Messages-Waiting: yes\r\nthis is not a header\r\n", "bad summary line"),
        (b"Messages-Waiting: yes\r\n\xff\xfe\r\n", "not UTF-8"),
        (b"Messages-Waiting: yes\r\n" + b"X" * 17000, "over 16384 bytes"),
    ],
)  # fmt: skip
def test_malformed_summaries_name_the_problem(body: bytes, reason: str) -> None:
    with pytest.raises(SummaryError, match=reason):
        parse(body)


def test_render_round_trips() -> None:
    body = render(True, "sip:alice@example.com", Counts(2, 5, 1, 0))
    assert body == (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@example.com\r\n"
        b"Voice-Message: 2/5 (1/0)\r\n"
    )
    s = parse(body)
    assert (s.waiting, s.account, s.voice) == (True, "sip:alice@example.com", Counts(2, 5, 1, 0))
