"""The SIP message trace (`[log] sip_trace`): every message in and out, as sngrep
would show it, on the logger `sipwake.sip.trace`.

A line says the direction, transport, peer, the first line and the headers, and the
body's length — never the body (message text, SDP). What would let a reader act as
someone is cut out: the credentials of Authorization and Proxy-Authorization (the
scheme and user name stay, to tell who tried), and push tokens (RFC 8599 `pn-prid`,
in a REGISTER's Contact and in the 200 OK that lists the bindings).

The transport calls it only when the trace is on (`TransportLayer.trace`), so a node
without it pays one attribute test per message.
"""

from __future__ import annotations

import logging
import re

from sipwake.sip.peer import Peer

log = logging.getLogger("sipwake.sip.trace")

REDACTED = "<redacted>"
_CREDENTIALS = re.compile(
    rb"^((?:proxy-)?authorization)[ \t]*:[ \t]*(\S+)(.*)$", re.IGNORECASE | re.MULTILINE
)
_USERNAME = re.compile(rb'\busername[ \t]*=[ \t]*("[^"]*"|[^,\s]+)', re.IGNORECASE)
_TOKEN = re.compile(rb"(pn-prid=)[^;>,\s]+", re.IGNORECASE)


def redact(head: bytes) -> bytes:
    """The header section with credentials and push tokens replaced by <redacted>."""

    def credentials(m: re.Match[bytes]) -> bytes:
        user = _USERNAME.search(m.group(3))
        who = b" " + user.group(0) if user else b""
        return m.group(1) + b": " + m.group(2) + who + b" " + REDACTED.encode()

    head = _CREDENTIALS.sub(credentials, head)
    return _TOKEN.sub(rb"\1" + REDACTED.encode(), head)


def describe(direction: str, data: bytes, peer: Peer) -> tuple[str, dict[str, object]]:
    """The trace line for one message, and its fields for a JSON log."""
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[:end], data[end + 4 :])
    text = redact(head).decode("utf-8", "replace")
    first = text.split("\r\n", 1)[0]
    arrow = "<-" if direction == "in" else "->"
    line = f"{direction} {arrow} {peer} ({len(body)} body bytes)\n" + text.replace("\r\n", "\n")
    fields: dict[str, object] = {
        "direction": direction,
        "transport": peer.transport,
        "peer": str(peer),
        "first_line": first,
        "body_length": len(body),
    }
    return line, fields


def trace(direction: str, data: bytes, peer: Peer) -> None:
    """Log one message going `direction` ("in" or "out") from or to `peer`."""
    if not log.isEnabledFor(logging.INFO):
        return
    try:
        line, fields = describe(direction, data, peer)
    except Exception:  # a trace must never cost a message
        log.exception("cannot trace %d bytes %s %s", len(data), direction, peer)
        return
    log.info("%s", line, extra=fields)
