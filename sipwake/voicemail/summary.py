"""RFC 3842 message summaries (`application/simple-message-summary`): read and write.

    Messages-Waiting: yes
    Message-Account: sip:alice@vmail.example.com
    Voice-Message: 2/8 (0/2)

    From: "Bob" <sip:bob@example.com>
    Subject: call me back
    Content-Duration: 42

The summary lines are checked strictly (a voicemail system that gets them wrong hears
400 with the reason); unknown summary lines are skipped, as RFC 3842 §5.2 lets new
message classes appear. The optional message headers after the blank line only feed
the push (caller, duration), so a header we cannot read there is ignored, not refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sipwake.sip.errors import SipParseError
from sipwake.sip.uri import NameAddr

EVENT = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"

# RFC 3458 message-context-class values a summary line may count
MESSAGE_CLASSES = frozenset(
    ("voice-message", "fax-message", "pager-message", "multimedia-message", "text-message",
     "none")
)  # fmt: skip
MAX_COUNT = 2**31 - 1
MAX_BODY = 16 * 1024

# Where a voice message's length may be given, in order of preference: Content-Duration
# is the voice-messaging header (RFC 3938 / VPIM); the others are seen in the wild.
DURATION_HEADERS = ("content-duration", "duration", "x-duration", "message-duration",
                    "x-message-duration", "x-voicemail-duration")  # fmt: skip

_COUNTS = re.compile(r"(\d{1,10})\s*/\s*(\d{1,10})(?:\s*\(\s*(\d{1,10})\s*/\s*(\d{1,10})\s*\))?")
_CLOCK = re.compile(r"(?:(\d{1,3}):)?(\d{1,2}):(\d{2})")  # [h:]mm:ss
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


class SummaryError(ValueError):
    """A malformed message summary; the text is the reason sent back in the 400."""


@dataclass(frozen=True, slots=True)
class Counts:
    """`new/old (urgent_new/urgent_old)` of one message class."""

    new: int = 0
    old: int = 0
    urgent_new: int = 0
    urgent_old: int = 0

    def __str__(self) -> str:
        return f"{self.new}/{self.old} ({self.urgent_new}/{self.urgent_old})"


@dataclass(frozen=True, slots=True)
class MessageSummary:
    waiting: bool
    account: str = ""  # Message-Account URI
    voice: Counts | None = None  # None: the summary has no Voice-Message line
    # the first message's optional headers (lower-case name → value)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who left the newest voicemail, as far as the voicemail system says."""

    uri: str = ""
    name: str = ""
    duration: int = 0  # seconds


def parse(body: bytes) -> MessageSummary:
    """Parse a message-summary body; raises SummaryError naming what is wrong."""
    if not body.strip():
        raise SummaryError("empty message-summary body")
    if len(body) > MAX_BODY:
        raise SummaryError(f"message-summary body over {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SummaryError("message-summary body is not UTF-8") from None
    lines = text.lstrip("\r\n").replace("\r\n", "\n").split("\n")
    try:
        blank = next(i for i, line in enumerate(lines) if not line.strip())
    except StopIteration:
        blank = len(lines)
    waiting: bool | None = None
    account = ""
    classes: dict[str, Counts] = {}
    for line in lines[:blank]:
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        if not colon or not key or " " in key:
            raise SummaryError(f"bad summary line {line[:40]!r}")
        if key == "messages-waiting":
            if waiting is not None:
                raise SummaryError("more than one Messages-Waiting")
            if value.lower() not in ("yes", "no"):
                raise SummaryError(f"Messages-Waiting must be yes or no, not {value[:20]!r}")
            waiting = value.lower() == "yes"
        elif key == "message-account":
            if account:
                raise SummaryError("more than one Message-Account")
            if not is_uri(value):
                raise SummaryError(f"bad Message-Account {value[:40]!r}")
            account = value
        elif key in MESSAGE_CLASSES:
            if key in classes:
                raise SummaryError(f"more than one {name.strip()}")
            classes[key] = _counts(name.strip(), value)
        # other names: a later message class or extension; skipped
    if waiting is None:
        raise SummaryError("missing Messages-Waiting")
    return MessageSummary(waiting, account, classes.get("voice-message"),
                          _message_headers(lines[blank + 1 :]))


def is_uri(value: str) -> bool:
    """An absolute URI, loosely (`sip:...`, `tel:...`): what Message-Account may be."""
    return _SCHEME.fullmatch(value) is not None


def _counts(name: str, value: str) -> Counts:
    m = _COUNTS.fullmatch(value)
    if m is None:
        raise SummaryError(f"bad {name} {value[:30]!r} (want new/old or new/old (new/old))")
    numbers = [int(g) if g is not None else 0 for g in m.groups()]
    if any(n > MAX_COUNT for n in numbers):
        raise SummaryError(f"{name} count out of range")
    return Counts(*numbers)


def _message_headers(lines: list[str]) -> dict[str, str]:
    """The first block of message headers (RFC 3842 opt-msg-headers), unfolded."""
    headers: dict[str, str] = {}
    last = ""
    for line in lines:
        if not line.strip():
            if headers:
                break  # the next message's block
            continue
        if line[0] in " \t" and last:
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        if colon and key and " " not in key:
            headers.setdefault(key, value.strip())
            last = key
    return headers


def caller(summary: MessageSummary) -> Caller:
    """Caller and duration from the summary's message headers (empty when absent)."""
    uri, name = _name_addr(summary.headers.get("from", ""))
    duration = 0
    for key in DURATION_HEADERS:
        if key in summary.headers:
            duration = parse_duration(summary.headers[key])
            break
    return Caller(uri, name, duration)


def _name_addr(value: str) -> tuple[str, str]:
    """(uri, display name) of a From value; voicemail systems write loose ones
    (`<bob@example.com>`, a bare number), so anything unparsable is kept as the URI."""
    value = value.strip()
    if not value:
        return "", ""
    try:
        addr = NameAddr.parse(value)
        return str(addr.uri), addr.display or ""
    except SipParseError:
        pass
    lt, gt = value.find("<"), value.rfind(">")
    if 0 <= lt < gt:
        return value[lt + 1 : gt].strip(), value[:lt].strip().strip('"').strip()
    return value, ""


def parse_duration(value: str) -> int:
    """Seconds from `42`, `42.5`, `0:42` or `1:02:03`; 0 when unreadable."""
    value = value.strip().split(";")[0].strip()
    m = _CLOCK.fullmatch(value)
    if m is not None:
        hours, minutes, seconds = (int(g or 0) for g in m.groups())
        return hours * 3600 + minutes * 60 + seconds
    try:
        seconds_f = float(value)
    except ValueError:
        return 0
    if not 0 <= seconds_f < 10**7:  # also refuses nan and inf
        return 0
    return round(seconds_f)


def render(waiting: bool, account: str, voice: Counts) -> bytes:
    """A message-summary body (what subscribed and registered devices receive)."""
    lines = [f"Messages-Waiting: {'yes' if waiting else 'no'}"]
    if account:
        lines.append(f"Message-Account: {account}")
    lines.append(f"Voice-Message: {voice}")
    return ("\r\n".join(lines) + "\r\n").encode()
