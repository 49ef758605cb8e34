"""SIP parser and serializer: round trips, compact forms, RFC 4475-style torture input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.sip.errors import SipParseError
from sipwake.sip.message import (
    Message,
    WireMessage,
    make_response,
    parse,
    parse_error_partial,
)
from sipwake.sip.uri import URI, NameAddr, Via
from tests.helpers.rfc4475 import WELL_FORMED, crlf

REGISTER = crlf("""
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport
Max-Forwards: 70
To: "Bob \\"the\\" Builder" <sip:bob@example.com>
From: Bob <sip:bob@example.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1826 REGISTER
Contact: <sip:bob@192.0.2.4;pn-provider=apns;pn-prid=00ff;pn-param=ABCD123456.com.x.voip>;+sip.instance="<urn:uuid:1>", <sip:bob@192.0.2.5>;expires=60
Expires: 7200
Content-Length: 0

""")


def test_parse_register_fields() -> None:
    m = parse(REGISTER)
    assert m.method == "REGISTER" and m.is_request
    assert m.request_uri.host == "example.com"
    assert m.call_id == "843817637684230@998sdasdh09"
    assert m.cseq == (1826, "REGISTER")
    assert m.top_via.branch == "z9hG4bK776asdhds"
    assert "rport" in m.top_via.params
    assert m.from_tag == "456248" and m.to_tag == ""
    assert m.to.display == 'Bob "the" Builder'
    assert m.max_forwards == 70
    c1, c2 = m.contacts
    assert c1.uri.params["pn-provider"] == "apns"
    assert c1.params["+sip.instance"] == '"<urn:uuid:1>"'
    assert c2.params["expires"] == "60"
    assert m.int_header("Expires") == 7200


def test_round_trip_is_stable() -> None:
    m = parse(REGISTER)
    again = parse(m.to_bytes())
    assert again.to_bytes() == m.to_bytes()
    assert again.headers == m.headers


def test_compact_forms_and_multi_valued_headers() -> None:
    raw = crlf("""
MESSAGE sip:alice@example.com SIP/2.0
v: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKb
v: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKc
f: <sip:bob@example.com>;tag=1
t: sip:alice@example.com
i: abc
CSeq: 1 MESSAGE
c: text/plain
l: 5

hello""")
    m = parse(raw, stream=True)
    assert [v.branch for v in m.vias] == ["z9hG4bKa", "z9hG4bKb", "z9hG4bKc"]
    assert m.top_via.transport == "TCP" and m.top_via.port is None
    assert m.get("Content-Type") == "text/plain"
    assert m.body == b"hello"
    assert m.to.uri.user == "alice"
    assert m.pop_first("Via") is not None
    assert [v.branch for v in m.vias] == ["z9hG4bKb", "z9hG4bKc"]


def test_response_parse_and_make_response() -> None:
    req = parse(REGISTER)
    resp = make_response(req, 200, to_tag="xyz")
    assert resp.status == 200 and resp.reason == "OK"
    back = parse(resp.to_bytes())
    assert back.to_tag == "xyz" and back.cseq == (1826, "REGISTER")
    assert back.top_via.branch == req.top_via.branch
    assert make_response(req, 100, to_tag="xyz").to.tag is None  # no tag on 100


def test_body_is_bytes_and_content_length_framing() -> None:
    body = "héllo 🙂".encode()
    raw = crlf(f"""
MESSAGE sip:a@x SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:b@x>;tag=1
To: <sip:a@x>
Call-ID: 1
CSeq: 1 MESSAGE
Content-Length: {len(body)}
""") + b"\r\n" + body + b"trailing junk in the datagram"
    m = parse(raw)
    assert m.body == body  # UDP: bytes past Content-Length are discarded (§18.3)
    assert parse(m.to_bytes()).body == body


def test_header_folding_and_whitespace() -> None:
    raw = crlf("""
OPTIONS sip:x SIP/2.0
Via  :   SIP/2.0/UDP   h:5060 ;branch=z9hG4bK1
From: <sip:b@x>;tag=1
To: <sip:a@x>
Subject: first
  line continued
Call-ID: 1
CSeq:   7    OPTIONS
""") + b"\r\n"
    m = parse(raw)
    assert m.get("Subject") == "first line continued"
    assert m.cseq == (7, "OPTIONS")
    assert m.top_via.host == "h" and m.top_via.port == 5060


def test_uri_forms() -> None:
    u = URI.parse("sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi")
    assert u.scheme == "sips" and u.user == "alice" and u.password == "secret"
    assert u.host == "[2001:db8::1]" and u.port == 5061
    assert u.params == {"transport": "tls", "lr": None}
    assert str(u) == "sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?subject=hi"
    assert URI.parse("tel:+15551234567").opaque == "+15551234567"
    assert URI.parse("sip:alice@EXAMPLE.com").aor() == "sip:alice@example.com"


def test_name_addr_forms() -> None:
    na = NameAddr.parse('"A \\\\ B, \\"C\\"" <sip:a@x;lr>;tag=1;expires=3')
    assert na.display == 'A \\ B, "C"'
    assert na.uri.params == {"lr": None}
    assert na.params == {"tag": "1", "expires": "3"}
    assert NameAddr.parse(str(na)) == na
    plain = NameAddr.parse("sip:a@x;tag=9")  # addr-spec: params belong to the header
    assert plain.uri.params == {} and plain.tag == "9"
    assert NameAddr.parse("Bob Smith <sip:b@x>").display == "Bob Smith"
    assert NameAddr.parse("*").star


def test_via_with_ipv6_and_params() -> None:
    v = Via.parse("SIP/2.0/TLS [::1]:5061;branch=z9hG4bKx;received=::1;rport=5000")
    assert v.transport == "TLS" and v.host == "[::1]" and v.port == 5061
    assert v.params["rport"] == "5000"


# RFC 4475 §3.1.1 valid but tortuous messages (the RFC's own, tests/helpers/rfc4475.py):
# must parse.
VALID = [
    *(WELL_FORMED[name][1] for name in ("wsinv", "intmeth", "noreason")),
    # LF-only line ends (seen from broken phones): accepted
    b"OPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:b@x>;tag=1\n"
    b"To: <sip:a@x>\nCall-ID: 1\nCSeq: 1 OPTIONS\n\n",
]


@pytest.mark.parametrize("raw", VALID, ids=["wsinv", "intmeth", "noreason", "lf-only"])
def test_valid_torture_messages_parse(raw: bytes) -> None:
    m = parse(raw)
    assert m.call_id
    m.cseq  # noqa: B018
    m.top_via  # noqa: B018
    parse(m.to_bytes())  # what we write, we read back


def test_wsinv_details() -> None:
    m = parse(VALID[0])
    assert m.max_forwards == 68
    assert m.cseq == (9, "INVITE")
    assert [v.branch for v in m.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert m.to_tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.contacts[0].params["q"] == "0.33"


BASE = """
OPTIONS sip:a@x SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:b@x>;tag=1
To: <sip:a@x>
Call-ID: 1
CSeq: 1 OPTIONS
Max-Forwards: 70
"""

# RFC 4475 §3.1.2-style invalid messages: SipParseError (→ 400), never another exception.
INVALID = {
    "missing-call-id": BASE.replace("Call-ID: 1\n", ""),
    "missing-via": BASE.replace("Via: SIP/2.0/UDP h;branch=z9hG4bK1\n", ""),
    "cseq-mismatch": BASE.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
    "cseq-not-number": BASE.replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS"),
    "cseq-huge": BASE.replace("CSeq: 1 OPTIONS", "CSeq: 36893488147419103232 OPTIONS"),
    "bad-version": BASE.replace("SIP/2.0\n", "SIP/7.0\n", 1),
    "lws-in-ruri": BASE.replace("sip:a@x SIP", "sip:a@x x SIP"),
    "unclosed-quote": BASE.replace("From: <sip:b@x>", 'From: "Bob <sip:b@x>'),
    "ltgt-missing": BASE.replace("To: <sip:a@x>", "To: <sip:a@x"),
    "bad-via": BASE.replace("SIP/2.0/UDP h;", "SIP/2.0 h;"),
    "bad-port": BASE.replace("SIP/2.0/UDP h;", "SIP/2.0/UDP h:99999;"),
    "empty-host": BASE.replace("<sip:b@x>", "<sip:b@>"),
    "bad-max-forwards": BASE.replace("Max-Forwards: 70", "Max-Forwards: seventy"),
    "bad-status": "SIP/2.0 99 Low\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:b@x>;tag=1\n"
    "To: <sip:a@x>\nCall-ID: 1\nCSeq: 1 OPTIONS\n",
    "header-no-colon": BASE + "Garbage line without colon\n",
    "content-length-too-big": BASE + "Content-Length: 50\n",
    "content-length-negative": BASE + "Content-Length: -5\n",
    # control characters the grammar allows nowhere but in a quoted-pair (RFC 3261 §25.1)
    "nul-in-request-uri": BASE.replace("sip:a@x SIP", "sip:a\x00@x SIP"),
    "soh-in-request-uri": BASE.replace("sip:a@x SIP", "sip:a@x\x01 SIP"),
    "nul-in-header": BASE + "Subject: a\x00b\n",
    "soh-in-header": BASE + "Subject: a\x01b\n",
    "esc-in-header": BASE + "Subject: \x1b[31mred\n",
    "del-in-header": BASE + "Subject: a\x7fb\n",
    "vt-ending-header": BASE + "Subject: a\x0b\n",  # str.strip() would hide it
    "us-ending-header": BASE + "Subject: a\x1f\n",
    "nul-in-call-id": BASE.replace("Call-ID: 1", "Call-ID: 1\x00"),
    "lone-cr-in-header": BASE + "Subject: a\rX-Injected: b\n",
    "ctl-in-quoted-string-unescaped": BASE.replace("To: <sip:a@x>", 'To: "A\x01" <sip:a@x>'),
    "ctl-outside-quoted-string": BASE + 'Subject: "quoted" \\\x01 is no quoted-pair\n',
    # method token (RFC 3261 §25.1 token: alphanum and -.!%*_+`'~)
    "method-at": BASE.replace("OPTIONS", "OPT@IONS"),
    "method-soh": BASE.replace("OPTIONS sip", "OPTIONS\x01 sip"),
    "method-nul": BASE.replace("OPTIONS sip", "OPTIONS\x00 sip"),
    "method-space": BASE.replace("OPTIONS sip", "OPT IONS sip"),
    "method-paren": BASE.replace("OPTIONS", "OPT(IONS"),
    "method-utf8": BASE.replace("OPTIONS", "OPTIÖNS"),
    # a single-valued framing header twice (RFC 4475 §3.3.9 mcl01)
    "content-length-twice-same": BASE + "Content-Length: 0\nContent-Length: 0\n",
    "content-length-twice-differ": BASE + "Content-Length: 0\nl: 3\n",
    "content-length-compact-twice": BASE + "l: 0\nl: 0\n",
    # digits are ASCII (int() takes "٣", and "²" passes isdigit() but not int())
    "cseq-superscript": BASE.replace("CSeq: 1 OPTIONS", "CSeq: ² OPTIONS"),
    "cseq-arabic-indic": BASE.replace("CSeq: 1 OPTIONS", "CSeq: ٣ OPTIONS"),
    "content-length-arabic-indic": BASE + "Content-Length: ٠\n",
    "content-length-superscript": BASE + "Content-Length: ⁰\n",
    "via-port-superscript": BASE.replace("UDP h;", "UDP h:5²;"),
    "ruri-port-arabic-indic": BASE.replace("sip:a@x SIP", "sip:a@x:٥٠٦٠ SIP"),
    "max-forwards-superscript": BASE.replace("Max-Forwards: 70", "Max-Forwards: ²"),
    "status-superscript": "SIP/2.0 1²3 x\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:b@x>;tag=1\n"
    "To: <sip:a@x>\nCall-ID: 1\nCSeq: 1 OPTIONS\n",
    "response-other-version": "SIP/7.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n"
    "From: <sip:b@x>;tag=1\nTo: <sip:a@x>;tag=2\nCall-ID: 1\nCSeq: 1 OPTIONS\n",
}

# The request is unreadable but its Via is not: these get an answer (400, or 505 for the
# version), so the partial message the error carries must have a method and the headers.
ANSWERABLE = [
    name for name in INVALID
    if name.startswith(("nul-", "soh-", "esc-", "del-", "vt-", "us-", "lone-", "ctl-", "method-",
                        "content-length-twice", "content-length-compact", "lws-in-ruri",
                        "bad-version", "header-no-colon"))
]


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_raise_parse_error(name: str) -> None:
    raw = crlf(INVALID[name]) + b"\r\n"
    with pytest.raises(SipParseError):
        m = parse(raw)
        m.max_forwards  # noqa: B018 - lazily parsed, still must fail cleanly


@pytest.mark.parametrize("name", ANSWERABLE)
def test_malformed_requests_can_still_be_answered(name: str) -> None:
    raw = crlf(INVALID[name]) + b"\r\n"
    with pytest.raises(SipParseError) as info:
        parse(raw)
    partial = parse_error_partial(info.value)
    assert partial is not None and partial.method
    assert partial.get("via") and partial.get("call-id") and partial.get("cseq")
    assert info.value.status == (505 if name == "bad-version" else 400)
    response = make_response(partial, info.value.status)
    assert response.get("Via") == "SIP/2.0/UDP h;branch=z9hG4bK1"


@pytest.mark.parametrize("version", ["SIP/7.0", "SIP/2.1", "SIP/3.0", "sip/1.0"])
def test_other_sip_versions_are_505_and_other_protocols_400(version: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse(crlf(BASE.replace("SIP/2.0\n", f"{version}\n", 1)) + b"\r\n")
    assert info.value.status == 505
    assert parse_error_partial(info.value) is not None
    for other in ("HTTP/1.1", "SIP/2", "SIP/x.0", "SIP/2.0/UDP"):
        with pytest.raises(SipParseError) as info:
            parse(crlf(BASE.replace("SIP/2.0\n", f"{other}\n", 1)) + b"\r\n")
        assert info.value.status == 400


def test_a_response_that_does_not_parse_is_never_answered() -> None:
    for name in ("response-other-version", "status-superscript", "bad-status"):
        with pytest.raises(SipParseError) as info:
            parse(crlf(INVALID[name]) + b"\r\n")
        assert parse_error_partial(info.value) is None, name
    # RFC 3261 §7.1: the version is case-insensitive, also in a status line
    lower = parse(crlf(INVALID["response-other-version"].replace("SIP/7.0", "sip/2.0")) + b"\r\n")
    assert lower.status == 200 and not lower.method


def test_control_characters_where_the_grammar_allows_them() -> None:
    # UTF-8 and HTAB in header values, a NUL escaped as a quoted-pair (RFC 4475 intmeth),
    # and anything at all in the body
    raw = crlf(
        BASE.replace("To: <sip:a@x>", 'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:a@x>')
        + "Subject: caf\u00e9\tau lait \u5927\u505c\u96fb\n"
        + "Content-Type: application/octet-stream\nContent-Length: 5\n"
    ) + b"\r\n\x00\x01\r\x7f\x00"
    m = parse(raw)
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    m.set("To", str(m.to))  # written back as quoted-pairs, so it reads back (and parses)
    assert parse(m.to_bytes()).to == m.to
    assert m.get("Subject") == "caf\u00e9\tau lait \u5927\u505c\u96fb"
    assert m.body == b"\x00\x01\r\x7f\x00"
    assert parse(m.to_bytes()).body == m.body
    # stream framing reads the body by length, whatever it holds
    assert parse(raw, stream=True).body == m.body


def test_not_utf8_and_no_header_end() -> None:
    with pytest.raises(SipParseError):
        parse(b"OPTIONS sip:a@x SIP/2.0\r\nSubject: \xff\xfe\r\n\r\n")
    with pytest.raises(SipParseError):
        parse(b"OPTIONS sip:a@x SIP/2.0\r\nVia: x")


def test_stream_requires_content_length() -> None:
    with pytest.raises(SipParseError):
        parse(crlf(BASE) + b"\r\n", stream=True)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        m = parse(data)
    except SipParseError:
        return
    m.to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_header_values_never_crash(value: str) -> None:
    raw = (crlf(BASE).decode() + f"Contact: {value}\r\nSubject: {value}\r\n\r\n").encode(
        "utf-8", "surrogatepass"
    )
    try:
        m = parse(raw)
        m.contacts  # noqa: B018
        m.get_all("Contact")
    except SipParseError:
        pass
    except UnicodeEncodeError:
        pass


def test_header_editing() -> None:
    m = Message(method="OPTIONS", uri="sip:a@x")
    m.add("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    m.add("Route", "<sip:p1;lr>, <sip:p2;lr>")
    m.set("Max-Forwards", "69")
    assert m.pop_first("Route") == "<sip:p1;lr>"
    assert m.get_all("Route") == ["<sip:p2;lr>"]
    m.replace_top("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")
    assert m.top_via.host == "b"
    m.remove("Route")
    assert m.get("Route") is None


def test_repeated_uri_parses_are_independent_copies() -> None:
    text = "sip:alice@192.0.2.1:5070;pn-provider=apns;transport=tcp"
    first = URI.parse(text)
    first.params.pop("pn-provider")  # e.g. reach() strips push parameters
    first.host = "changed"
    second = URI.parse(text)  # served from the cache of earlier parses
    assert second.params == {"pn-provider": "apns", "transport": "tcp"}
    assert second.host == "192.0.2.1" and second is not first
    with pytest.raises(SipParseError):
        URI.parse("sip:bad host@")  # failures are never cached as successes


def test_parse_caches_stay_small_under_hostile_input() -> None:
    from sipwake.sip import message, uri

    for i in range(3):
        long_uri = f"sip:{'u' * 5000}{i}@example.com"
        assert URI.parse(long_uri).user.startswith("uuu")
        assert long_uri not in uri._PARSED  # only short URIs are kept
    base = (
        "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
        "CSeq: 1 OPTIONS\r\n"
    )
    for i in range(600):  # more distinct header names than the cache holds
        parse((base + f"X-{'n' * (i % 3) * 40}{i}: v\r\nContent-Length: 0\r\n\r\n").encode())
    assert len(message._NAMES) <= message._NAMES_MAX
    assert all(len(name) <= 64 for name in message._NAMES)


def test_a_wire_message_is_sent_as_its_bytes_and_read_only_for_its_top_via() -> None:
    request = parse(
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKa;rport=5062;received=192.0.2.9, "
        b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
        b"CSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    resp = make_response(request, 200, to_tag="t")
    wire = WireMessage(200, "OK", resp.to_bytes())
    assert wire.to_bytes() == resp.to_bytes()
    assert (wire.status, wire.reason, wire.method) == (200, "OK", "")
    top = wire.top_via
    assert (top.host, top.port, top.branch) == ("192.0.2.7", 5062, "z9hG4bKa")
    assert top.params["received"] == "192.0.2.9"


def test_a_name_addr_parsed_again_is_a_fresh_copy() -> None:
    text = '"Alice" <sip:alice@example.com;transport=udp>;tag=abc;+sip.instance="<urn:x>"'
    first = NameAddr.parse(text)
    first.params["tag"] = "changed"
    first.uri.params["transport"] = "tcp"
    first.uri.user = "mallory"
    again = NameAddr.parse(text)
    assert (again.display, again.tag, again.params["+sip.instance"]) == ("Alice", "abc", '"<urn:x>"')
    assert (again.uri.user, again.uri.params) == ("alice", {"transport": "udp"})
    with pytest.raises(SipParseError):
        NameAddr.parse("<sip:bad")  # errors are not remembered as answers
    with pytest.raises(SipParseError):
        NameAddr.parse("<sip:bad")
