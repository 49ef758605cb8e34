"""The SIP parser's cost, compiled (mypyc) and pure Python, in one run.

    python bench/parser.py [--rounds 5] [--messages 2000]

Messages as a registrar and proxy see them: a REGISTER with digest credentials and an
RFC 8599 Contact, and an INVITE with SDP; each message of a kind distinct (branch, tags,
Call-ID, nonce, response, user out of 200), so the parser's caches of earlier URIs and
name-addrs hit as they do in service (same users, same Contacts) and miss where they do.
Per message:
  parse        parse() alone (start line, header lines, the mandatory headers' views)
  + read       and what the registrar or proxy reads next: Contact, Expires, Route,
               Authorization, Max-Forwards, Request-URI
  + write      and a 200 (REGISTER) or 100 (INVITE) built and serialised, and the
               request itself serialised (what a proxy forwards)
µs of CPU (process time), the best of `--rounds` rounds, each variant in a subprocess of
its own, the variants alternated round by round (this machine's other load hits both).
Which variant a subprocess ran is checked, not assumed: `sipwake.sip.parser()`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, dict[str, str]] = {"compiled": {}, "pure": {"SIPWAKE_PURE_PYTHON": "1"}}

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.{host}:5062;branch=z9hG4bK{n:08x}a;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:user{user}@example.com>;tag={n:08x}f\r\n"
    "To: <sip:user{user}@example.com>\r\n"
    "Call-ID: {n:08x}-4f2a-9c1b@192.0.2.{host}\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Contact: <sip:user{user}@192.0.2.{host}:5062;transport=udp;pn-provider=apns;"
    "pn-prid={token};pn-param=ABCD123456.com.example.dialer.voip>;"
    '+sip.instance="<urn:uuid:00000000-0000-4000-8000-{user:012d}>";expires=600\r\n'
    'Authorization: Digest username="user{user}", realm="example.com", '
    'nonce="{n:016x}8f2b1c0d9e", uri="sip:example.com", '
    'response="{n:032x}", algorithm=SHA-256, cnonce="{n:08x}c", qop=auth, nc=00000001\r\n'
    "Expires: 600\r\n"
    "Supported: path, gruu, outbound\r\n"
    "User-Agent: Dialer/4.2 (iOS 17.4)\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)

SDP = (
    "v=0\r\no=- {n} 1 IN IP4 192.0.2.{host}\r\ns=-\r\nc=IN IP4 192.0.2.{host}\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 111 0 8 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    "a=ice-ufrag:{n:08x}\r\na=ice-pwd:{n:024x}\r\n"
    "a=candidate:1 1 UDP 2130706431 192.0.2.{host} 4000 typ host\r\na=sendrecv\r\n"
)

INVITE = (
    "INVITE sip:user{callee}@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.{host}:5062;branch=z9hG4bK{n:08x}i;rport\r\n"
    "Max-Forwards: 70\r\n"
    '"User {user}" <sip:user{user}@example.com>;tag={n:08x}f\r\n'
    "To: <sip:user{callee}@example.com>\r\n"
    "Call-ID: {n:08x}-call@192.0.2.{host}\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:user{user}@192.0.2.{host}:5062;transport=udp>\r\n"
    "Proxy-Authorization: Digest username=\"user{user}\", realm=\"example.com\", "
    'nonce="{n:016x}8f2b1c0d9e", uri="sip:user{callee}@example.com", '
    'response="{n:032x}", algorithm=SHA-256, cnonce="{n:08x}c", qop=auth, nc=00000001\r\n'
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, NOTIFY, UPDATE\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: Dialer/4.2 (iOS 17.4)\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)


def messages(kind: str, count: int) -> list[bytes]:
    out = []
    for n in range(count):
        user, host = n % 200, 10 + n % 200
        fields = {"n": n, "user": user, "host": host, "callee": (user + 1) % 200,
                  "token": f"{user:064x}"}  # fmt: skip
        if kind == "REGISTER":
            out.append(REGISTER.format(**fields).encode())
        else:
            sdp = SDP.format(**fields).encode()
            head = INVITE.replace('"User', 'From: "User').format(length=len(sdp), **fields)
            out.append(head.encode() + sdp)
    return out


def measure(count: int) -> dict[str, object]:
    """In the subprocess: µs per message per kind and step, best of 3 passes."""
    from sipwake import sip
    from sipwake.sip.message import Message, make_response, parse

    def parse_only(data: bytes) -> None:
        parse(data)

    def parse_read(data: bytes) -> Message:
        m = parse(data)
        m.contacts  # noqa: B018
        m.int_header("expires")
        m.get_all("route")
        m.get("authorization") or m.get("proxy-authorization")
        m.max_forwards  # noqa: B018
        m.request_uri  # noqa: B018
        return m

    def parse_read_write(data: bytes) -> None:
        m = parse_read(data)
        make_response(m, 200 if m.method == "REGISTER" else 100, to_tag="t1").to_bytes()
        m.to_bytes()

    results: dict[str, float] = {}
    for kind in ("REGISTER", "INVITE"):
        data = messages(kind, count)
        steps: tuple[tuple[str, Callable[[bytes], object]], ...] = (
            ("parse", parse_only), ("+ read", parse_read), ("+ write", parse_read_write),
        )  # fmt: skip
        for step, fn in steps:
            best = float("inf")
            for _ in range(3):
                start = time.process_time()
                for d in data:
                    fn(d)
                best = min(best, time.process_time() - start)
            results[f"{kind} {step}"] = best / count * 1e6
    return {"parser": sip.parser(), "us": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.messages)))
        return
    best: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for variant, extra in VARIANTS.items():
            env = {k: v for k, v in os.environ.items() if k != "SIPWAKE_PURE_PYTHON"}
            env |= {"PYTHONPATH": str(ROOT), **extra}
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--messages", str(args.messages)],
                env=env, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            got = json.loads(out)
            if variant == "compiled" and not got["parser"].startswith("compiled"):
                sys.exit(f"no compiled parser to measure: {got['parser']} (pip install -e .)")
            if variant == "pure" and not got["parser"].startswith("pure"):
                sys.exit(f"the pure run ran {got['parser']}")
            kept = best.setdefault(variant, {})
            for key, us in got["us"].items():
                kept[key] = min(kept.get(key, us), us)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'µs CPU per message':24} {'pure':>8} {'compiled':>9} {'speed-up':>9}")
    for key in best["pure"]:
        pure, compiled = best["pure"][key], best["compiled"][key]
        print(f"{key:24} {pure:8.1f} {compiled:9.1f} {pure / compiled:8.2f}x")


if __name__ == "__main__":
    main()
