"""Reading MESSAGE bodies: CPIM envelopes (RFC 3862), IMDN ids (RFC 5438), previews;
and the per-sender rate limit."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from sipwake.messages.content import GENERIC, number_of, parse_content, split_media_type
from sipwake.ratelimit import RateLimiter
from sipwake.testing import ManualScheduler

RCS = (
    b'From: "Alice Liddell" <sip:+4930123@ims.example.com>\r\n'
    b"To: <sip:anonymous@anonymous.invalid>\r\n"
    b"DateTime: 2026-05-01T12:00:00.000Z\r\n"
    b"NS: imdn <urn:ietf:params:imdn>\r\n"
    b"imdn.Message-ID: Xs7lSo3c1Q\r\n"
    b"imdn.Disposition-Notification: positive-delivery, display\r\n"
    b"\r\n"
    b"Content-Type: text/plain;charset=UTF-8\r\n"
    b"Content-Length: 12\r\n"
    b"\r\n"
) + "Grüße 👋".encode()


def test_rcs_cpim_envelope() -> None:
    c = parse_content("message/cpim", RCS)
    assert c.sender_uri == "sip:+4930123@ims.example.com"
    assert c.sender_name == "Alice Liddell"
    assert c.imdn_id == "Xs7lSo3c1Q"
    assert c.media_type == "text/plain"
    assert c.text == "Grüße 👋"
    assert not c.silent and not c.transient


def test_rfc3862_example_with_other_prefix_and_bare_newlines() -> None:
    body = (
        b"From: MR SANDERS <im:piglet@100akerwood.com>\n"
        b"To: Depressed Donkey <im:eeyore@100akerwood.com>\n"
        b"Subject;lang=fr: le temps\n"
        b"NS: receipts <urn:ietf:params:imdn>\n"
        b"receipts.Message-ID: 34jk324j\n"
        b"\n"
        b'Content-type: text/plain; charset="iso-8859-1"\n'
        b"\n"
    ) + "Voilà".encode("latin-1")
    c = parse_content("Message/CPIM", body)
    assert c.sender_uri == "im:piglet@100akerwood.com"
    assert c.sender_name == "MR SANDERS"
    assert c.imdn_id == "34jk324j"
    assert c.text == "Voilà"


def test_message_id_needs_the_imdn_namespace() -> None:
    body = b"From: <sip:a@b.c>\r\nother.Message-ID: nope\r\nNS: other <urn:example>\r\n\r\n" \
           b"Content-Type: text/plain\r\n\r\nhi"
    assert parse_content("message/cpim", body).imdn_id == ""


def test_anonymous_sender_and_non_text_content() -> None:
    body = (
        b"From: <sip:anonymous@anonymous.invalid>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: f1\r\n\r\n"
        b"Content-Type: application/vnd.gsma.rcs-ft-http+xml\r\n\r\n<file/>"
    )
    c = parse_content("message/cpim", body)
    assert (c.sender_uri, c.sender_name) == ("", "")
    assert c.text == "File" and c.imdn_id == "f1"
    assert parse_content("image/jpeg", b"\xff\xd8\xff").text == "Image"
    assert parse_content("application/x-whatever", b"\x00").text == GENERIC


def test_base64_content_and_a_mime_wrapper() -> None:
    inner = base64.b64encode("über".encode())
    body = (
        b"Content-Type: message/cpim\r\n\r\n"
        b"From: Bob <sip:bob@example.com>\r\n\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ) + inner
    c = parse_content("message/cpim", body)
    assert c.sender_uri == "sip:bob@example.com" and c.text == "über"


def test_delivery_reports_are_silent_and_typing_is_transient() -> None:
    imdn = (
        b"From: <sip:bob@example.com>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: r1\r\n\r\nContent-Type: message/imdn+xml\r\n\r\n<imdn/>"
    )
    report = parse_content("message/cpim", imdn)
    assert report.silent and report.text == "" and report.imdn_id == "r1"
    typing = parse_content("application/im-iscomposing+xml", b"<isComposing/>")
    assert typing.transient and not typing.silent


def test_plain_text_charsets() -> None:
    assert parse_content("text/plain; charset=windows-1252", b"caf\xe9").text == "café"
    assert parse_content("text/plain; charset=bogus-9", "ok é".encode()).text == "ok é"
    assert parse_content("", b"\xff\xfe").text == "\ufffd\ufffd"  # never raises


def test_helpers() -> None:
    assert split_media_type('Text/Plain; Charset="UTF-8"') == ("text/plain", {"charset": "UTF-8"})
    assert number_of("sip:+4930123;phone-context=x@example.com;user=phone") == "+4930123"
    assert number_of("tel:+4930123;phone-context=example.com") == "+4930123"
    assert number_of("im:piglet@100akerwood.com") == "piglet"
    assert number_of("not a uri") == ""


@given(st.binary(max_size=600), st.sampled_from(["message/cpim", "text/plain", "image/png"]))
def test_hostile_bodies_never_raise(body: bytes, content_type: str) -> None:
    parse_content(content_type, body)


def test_rate_limiter_bucket() -> None:
    clock = ManualScheduler(1000.0)
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock.time)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == 0.5  # one token every half second
    assert limiter.take("b") == 0.0  # per sender
    clock.advance(0.5)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert RateLimiter(rate=0, burst=1).take("x") == 0.0  # 0 disables
