"""SIP messages: a lazy parser and a serializer (RFC 3261 §7, §20, §25).

`parse()` splits the start line and the header lines once and checks the mandatory
headers; everything else (URIs, name-addr, Via parameters) is parsed only when asked
for and then cached. The hot path — transaction matching — reads just the top Via,
CSeq, Call-ID and the From/To tags.
"""

from __future__ import annotations

import re
from typing import Any, Final

from sipwake.sip.errors import SipParseError, SipVersionError
from sipwake.sip.uri import URI, NameAddr, Via, split_unquoted

Header = tuple[str, str, str]  # (look-up key, name as written, value)

COMPACT: Final = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
    "l": "content-length", "k": "supported", "s": "subject", "c": "content-type",
    "e": "content-encoding", "o": "event", "r": "refer-to", "b": "referred-by",
    "u": "allow-events", "x": "session-expires", "a": "accept-contact",
    "j": "reject-contact", "d": "request-disposition", "y": "identity",
}  # fmt: skip

# How we write header names back; anything else keeps the sender's spelling.
CANONICAL: Final = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Expires",
        "Min-Expires", "Content-Length", "Content-Type", "Route", "Record-Route", "Path",
        "Allow", "Supported", "Require", "Proxy-Require", "Unsupported", "User-Agent",
        "Server", "Authorization", "Proxy-Authorization", "WWW-Authenticate",
        "Proxy-Authenticate", "Authentication-Info", "Event", "Subscription-State",
        "Reason", "Retry-After", "Feature-Caps", "Date", "Accept", "Subject",
        "Content-Encoding", "Allow-Events", "Refer-To", "Referred-By", "Session-Expires",
        "Timestamp", "Warning", "Organization", "Priority", "P-Asserted-Identity",
    )
}  # fmt: skip

# Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). Not the
# authentication headers, Date or others whose single value contains commas.
LIST_HEADERS: Final = frozenset(
    ("via", "contact", "route", "record-route", "path", "allow", "supported", "require",
     "proxy-require", "unsupported", "accept", "allow-events", "accept-encoding",
     "accept-language", "content-encoding", "in-reply-to", "reason", "feature-caps",
     "p-asserted-identity")
)  # fmt: skip

MANDATORY: Final = ("via", "from", "to", "call-id", "cseq")
MANDATORY_SINGLE: Final = MANDATORY[1:]  # the Via is checked by parsing it
# Headers a message may carry once at most (RFC 4475 §3.3.8 multi01, §3.3.9 mcl01)
SINGLE: Final = frozenset(("call-id", "cseq", "from", "to", "max-forwards", "content-length"))
_FOLD: Final = re.compile(r"\r?\n[ \t]+")
_TOKEN: Final = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_METHOD: Final = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_VERSION: Final = re.compile(r"SIP/[0-9]+\.[0-9]+$", re.I)

# Control characters (RFC 3261 §25.1): HTAB is whitespace and CR only ends a line (with
# its LF); any other may appear only escaped as a quoted-pair inside a quoted-string (RFC
# 4475 intmeth). The hot path looks for one in the header bytes with a translate and a
# memchr, and for a lone CR with a regex whose literal prefix makes it a memchr loop; only
# a message that has one pays for the exact check.
_CONTROL_BYTES: Final = bytes(
    0 if (b < 0x20 and b not in (0x09, 0x0A, 0x0D)) or b == 0x7F else 1 for b in range(256)
)
_LONE_CR: Final = re.compile(rb"\r[^\n]")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_QUOTED_STRING: Final = re.compile(r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n])*"')

REASONS: Final = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 204: "No Notification",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 423: "Interval Too Brief",
    429: "Too Many Requests", 430: "Flow Failed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip


class Message:
    """A SIP request (method set) or response (status set).

    Headers are kept in order as (key, name, value) triples: `key` is the lower-case
    full name used for look-ups, `name` the spelling written on the wire. Tuples, not
    lists: a response or a forwarded copy shares them with the message it came from.
    """

    __slots__ = (
        "_cache", "body", "headers", "method", "reason", "received_at", "source", "status", "uri",
    )  # fmt: skip

    def __init__(
        self,
        method: str = "",
        uri: str = "",
        status: int = 0,
        reason: str = "",
        headers: list[Header] | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.uri = uri  # Request-URI as text; request_uri parses it
        self.status = status
        self.reason = reason
        self.headers: list[Header] = headers if headers is not None else []
        self.body = body
        self.source: Any = None  # set by the transport: where the message came from
        self.received_at = 0.0  # time.perf_counter() when the transport read it
        self._cache: dict[str, Any] = {}

    # ----------------------------------------------------------------- headers
    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str) -> str | None:
        """First header line of that name (whole line value, not split)."""
        key = name.lower()
        key = COMPACT.get(key, key)
        for h in self.headers:
            if h[0] == key:
                return h[2]
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of that name; list headers are split on commas."""
        key = name.lower()
        key = COMPACT.get(key, key)
        values = [h[2] for h in self.headers if h[0] == key]
        if key in LIST_HEADERS:
            split: list[str] = []
            for v in values:
                split.extend(p.strip() for p in split_unquoted(v, ",") if p.strip())
            return split
        return values

    def add(self, name: str, value: str, first: bool = False) -> None:
        key = name.lower()
        key = COMPACT.get(key, key)
        entry = (key, CANONICAL.get(key, name), value)
        if first:
            self.headers.insert(0, entry)
        else:
            self.headers.append(entry)
        self._invalidate(key)

    def set(self, name: str, value: str) -> None:
        """Replace every header of that name with one value, keeping its position."""
        key = name.lower()
        key = COMPACT.get(key, key)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                self.headers[i] = (key, h[1], value)
                self.headers[i + 1 :] = [x for x in self.headers[i + 1 :] if x[0] != key]
                self._invalidate(key)
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = name.lower()
        key = COMPACT.get(key, key)
        self.headers = [h for h in self.headers if h[0] != key]
        self._invalidate(key)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a list header (top Via, top Route)."""
        key = name.lower()
        key = COMPACT.get(key, key)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                parts = split_unquoted(h[2], ",") if key in LIST_HEADERS else [h[2]]
                first = parts[0].strip()
                rest = ",".join(parts[1:]).strip()
                if rest:
                    self.headers[i] = (key, h[1], rest)
                else:
                    del self.headers[i]
                self._invalidate(key)
                return first
        return None

    def replace_top(self, name: str, value: str) -> None:
        """Replace the first value of a list header (the top Via after stamping it)."""
        key = name.lower()
        key = COMPACT.get(key, key)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                parts = split_unquoted(h[2], ",")
                self.headers[i] = (key, h[1], ", ".join([value, *(p.strip() for p in parts[1:])]))
                self._invalidate(key)
                return
        self.add(name, value, first=True)

    def _invalidate(self, key: str) -> None:
        if self._cache:
            self._cache.pop(key, None)

    # ------------------------------------------------------ parsed, cached views
    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        cached = self._cache.get("cseq")
        if cached is None:
            cached = self._cache["cseq"] = _cseq(self.get("cseq") or "")
        return cached

    @property
    def vias(self) -> list[Via]:
        cached = self._cache.get("via")
        if cached is None:
            cached = self._cache["via"] = [Via.parse(v) for v in self.get_all("via")]
        return cached

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via")
        return vias[0]

    def _name_addr(self, key: str) -> NameAddr:
        cached = self._cache.get(key)
        if cached is None:
            text = self.get(key)
            if text is None:
                raise SipParseError(f"missing {key}")
            cached = self._cache[key] = NameAddr.parse(text)
        return cached

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("from")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("to")

    @property
    def from_tag(self) -> str:
        return self.from_.tag or ""

    @property
    def to_tag(self) -> str:
        return self.to.tag or ""

    @property
    def request_uri(self) -> URI:
        cached = self._cache.get("ruri")
        if cached is None:
            cached = self._cache["ruri"] = URI.parse(self.uri)
        return cached

    @property
    def contacts(self) -> list[NameAddr]:
        cached = self._cache.get("contact")
        if cached is None:
            cached = self._cache["contact"] = [NameAddr.parse(v) for v in self.get_all("m")]
        return cached

    @property
    def max_forwards(self) -> int | None:
        text = self.get("max-forwards")
        if text is None:
            return None
        text = text.strip().lstrip("0") or "0"  # RFC 4475 wsinv: "0068" is 68
        if not _digits(text) or len(text) > 3:
            raise SipParseError(f"bad Max-Forwards {text[:20]!r}")
        return min(int(text), 255)

    def int_header(self, name: str) -> int | None:
        """An integer-valued header (Expires, Min-Expires); 400 when malformed."""
        text = self.get(name)
        if text is None:
            return None
        text = text.strip()
        if not _digits(text) or len(text) > 10:
            raise SipParseError(f"bad {name} {text!r}")
        return int(text)

    # ---------------------------------------------------------------- writing
    def start_line(self) -> str:
        if self.method:
            return f"{self.method} {self.uri} SIP/2.0"
        return f"SIP/2.0 {self.status} {self.reason}"

    def to_bytes(self) -> bytes:
        lines = [self.start_line()]
        lines.extend(f"{h[1]}: {h[2]}" for h in self.headers if h[0] != "content-length")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode() + self.body

    def __repr__(self) -> str:
        return f"<Message {self.start_line()!r} call-id={self.call_id!r}>"

    def copy(self) -> Message:
        m = Message(
            self.method, self.uri, self.status, self.reason,
            list(self.headers), self.body,
        )  # fmt: skip
        m.source = self.source
        m.received_at = self.received_at
        return m


class WireMessage(Message):
    """A message kept as the bytes it was sent as (a final response a finished
    transaction resends to retransmissions): sent as they are, never parsed whole; its
    top Via, where a UDP response goes, is read from them when asked."""

    __slots__ = ("wire",)

    def __init__(self, status: int, reason: str, wire: bytes) -> None:
        super().__init__(status=status, reason=reason)
        self.wire = wire

    def to_bytes(self) -> bytes:
        return self.wire

    @property
    def vias(self) -> list[Via]:
        """The top Via only: all a resend needs."""
        cached = self._cache.get("via")
        if cached is None:
            cached = self._cache["via"] = _top_via(self.wire)
        return cached


def _top_via(wire: bytes) -> list[Via]:
    head = wire.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("via", "v"):
            return [Via.parse(split_unquoted(value, ",")[0])]
    return []


def parse(data: bytes, stream: bool = False) -> Message:
    """Parse one whole SIP message.

    For datagrams a body longer than Content-Length is cut (RFC 3261 §18.3) and a
    shorter one is an error; stream transports frame by Content-Length before calling.
    Raises SipParseError (SipVersionError for a request in another SIP version); its
    `partial` is the message as far as it could be read, so a 400 or 505 can still be
    formed: for a request it carries the method and every readable header line even when
    the request line or a header line is bad (a response is never answered).
    """
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = data.find(b"\n\n")
        sep = 2
        if end < 0:
            raise SipParseError("no end of headers")
    raw = data[:end]
    try:
        head = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("headers are not UTF-8") from exc
    if "\n " in head or "\n\t" in head:
        head = _FOLD.sub(" ", head)
    lines = head.split("\n")
    try:
        msg = _start_line(lines[0].rstrip("\r"))
    except SipParseError as exc:
        exc.args = (exc.args[0], _partial(lines, None))
        raise
    headers = msg.headers
    names = _NAMES
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        known = names.get(name) if colon else None
        if known is None:
            known = _header_name(name, colon, line, msg, lines)
        headers.append((known[0], known[1], value.strip()))  # strip() takes the \r too
    body = data[end + sep :]
    try:
        if raw.translate(_CONTROL_BYTES).find(0) >= 0 or _LONE_CR.search(raw) is not None:
            _check_controls(lines)
        _check(msg, body, stream)
    except SipParseError as exc:
        exc.args = (exc.args[0], msg)
        raise
    return msg


# header name as written → (look-up key, spelling on the wire); most messages use a few
# dozen names, so the checks and case folding run once per name, not once per line
_NAMES: Final[dict[str, tuple[str, str]]] = {}
_NAMES_MAX: Final = 512  # names are attacker-chosen: the cache must not grow without bound


def _header_name(
    name: str, colon: str, line: str, msg: Message, lines: list[str]
) -> tuple[str, str]:
    stripped = name.rstrip(" \t")
    if not colon or not stripped or not _TOKEN.match(stripped):
        why = f"bad header line {line.rstrip(chr(13))[:60]!r}"
        raise SipParseError(why, _partial(lines, msg))
    key = stripped.lower()
    key = COMPACT.get(key, key)
    known = (key, CANONICAL.get(key, stripped))
    if len(_NAMES) < _NAMES_MAX and len(name) <= 64:
        _NAMES[name] = known
    return known


def _partial(lines: list[str], msg: Message | None) -> Message | None:
    """A request whose request line or a header line is bad: its method (as far as it goes)
    and every header line that reads as one, for the 400/505 it still deserves. None for
    what looks like a response (never answered) or has no method at all."""
    if msg is None:
        start = lines[0].lstrip(" ")
        method = start.split(" ", 1)[0].rstrip("\r")
        if not method or start[:4].upper() == "SIP/":
            return None
        msg = Message(method=method)
    elif not msg.method:
        return None
    headers = msg.headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip()
        if colon and name:
            key = name.lower()
            key = COMPACT.get(key, key)
            headers.append((key, CANONICAL.get(key, name), value.strip()))
    return msg


def parse_error_partial(exc: SipParseError) -> Message | None:
    """The partly parsed message a SipParseError carries, if any."""
    return exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Message) else None


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() takes "²" (which int() refuses) and "٣"."""
    return text.isdigit() and text.isascii()


def _start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        return _status_line(line)
    parts = line.split(" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]) or not parts[1]:
        if line[:4].upper() == "SIP/":
            return _status_line(line)  # RFC 3261 §7.1: the version is case-insensitive
        raise SipParseError(f"bad request line {line[:60]!r}")
    if parts[2].upper() != "SIP/2.0":
        if _VERSION.match(parts[2]):
            raise SipVersionError(f"SIP version {parts[2][:20]!r} not supported")
        raise SipParseError(f"bad version {parts[2][:20]!r} in the request line")
    return Message(method=parts[0], uri=parts[1])


def _status_line(line: str) -> Message:
    parts = line.split(" ", 2)
    if parts[0].upper() != "SIP/2.0":
        raise SipParseError(f"response in another version {line[:60]!r}")
    code = parts[1] if len(parts) > 1 else ""
    if len(code) != 3 or not _digits(code) or not "100" <= code <= "699":
        raise SipParseError(f"bad status line {line[:60]!r}")
    return Message(status=int(code), reason=parts[2] if len(parts) > 2 else "")


def _check_controls(lines: list[str]) -> None:
    """The exact check, for a message whose header bytes hold a control character."""
    for i, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
        if _CONTROL.search(line) is None:
            continue
        if i == 0:
            raise SipParseError("control character in the start line")
        if _CONTROL.search(_QUOTED_STRING.sub("", line)) is not None:
            name = line.partition(":")[0].strip()
            raise SipParseError(f"control character in {name[:40]!r}")


def _cseq(text: str) -> tuple[int, str]:
    parts = text.split()
    if len(parts) != 2 or not _digits(parts[0]) or len(parts[0]) > 10:
        raise SipParseError(f"bad CSeq {text!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise SipParseError(f"CSeq number out of range {text!r}")
    return number, parts[1].upper()


def _check(msg: Message, body: bytes, stream: bool) -> None:
    # one pass for the headers that must be there, and there once; their parses are the
    # views the transaction layer reads next, cached now
    single: dict[str, str] = {}
    for h in msg.headers:
        key = h[0]
        if key in SINGLE:
            if key in single:
                raise SipParseError(f"more than one {CANONICAL[key]}")
            single[key] = h[2]
    for key in MANDATORY_SINGLE:
        if key not in single:
            raise SipParseError(f"missing {CANONICAL[key]}")
    cache = msg._cache
    _, method = cache["cseq"] = _cseq(single["cseq"])
    if msg.method and method != msg.method.upper():
        raise SipParseError("CSeq method does not match the request")
    if msg.method:
        msg.request_uri  # noqa: B018 - validates the Request-URI now
    msg.top_via  # noqa: B018 - validates the top Via (needed to answer at all)
    cache["from"] = NameAddr.parse(single["from"])  # dialog matching needs both tags
    cache["to"] = NameAddr.parse(single["to"])
    length_text = single.get("content-length")
    if length_text is None:
        if stream:
            raise SipParseError("missing Content-Length on a stream transport")
        msg.body = body
        return
    length_text = length_text.strip()
    if not _digits(length_text) or len(length_text) > 9:
        raise SipParseError(f"bad Content-Length {length_text!r}")
    length = int(length_text)
    if length > len(body):
        raise SipParseError("Content-Length larger than the body")
    msg.body = body[:length]


# ------------------------------------------------------------------ building
def make_response(
    request: Message, status: int, reason: str | None = None, to_tag: str | None = None
) -> Message:
    """A response to `request` with Via, From, To, Call-ID, CSeq copied (§8.2.6.2)."""
    resp = Message(status=status, reason=reason or REASONS.get(status, "Unknown"))
    headers = resp.headers
    for h in request.headers:
        key = h[0]
        if key in ("via", "from", "call-id", "cseq") or (
            key == "record-route" and 100 < status < 300
        ):
            headers.append(h)
        elif key == "to":
            value = h[2]
            if to_tag and status > 100 and not request.to_tag:
                value = f"{value};tag={to_tag}"
            headers.append((key, h[1], value))
    # The Vias are the request's, copied verbatim: so is their parse (a response is
    # sent to its top Via, and Via objects are only changed on arrival, _stamp_via)
    vias = request._cache.get("via")
    if vias is not None:
        resp._cache["via"] = list(vias)
    return resp
