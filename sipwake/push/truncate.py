"""Cut free text so a push payload fits its provider's byte limit.

The limit applies to the payload *as sent*: after JSON escaping for APNs (a quote
costs 2 bytes, a control character up to 6), as UTF-8 bytes of keys and values for
FCM data. Rather than modelling each format's escaping rules, `fit` takes the exact
size function of the payload being built and binary-searches the longest prefix
that fits: O(log n) serializations instead of Sygnal's one per removed character.
The cut then moves back to a grapheme-ish boundary so an emoji ZWJ sequence, a
flag, a keycap or a letter with its combining accents is kept whole or dropped whole.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable

ELLIPSIS = "…"

# A cluster longer than this (e.g. "Zalgo" text, hundreds of stacked marks) is cut
# on a code point boundary instead: better a broken cluster than an empty preview.
_MAX_CLUSTER = 32

_ZWJ = "\u200d"


class PayloadTooLarge(ValueError):
    """The payload does not fit even with the cuttable text removed."""


def scrub(text: str) -> str:
    """Text that encodes to UTF-8: surrogate pairs joined, lone surrogates replaced.

    Python strings can carry surrogates (from `surrogatepass`/`surrogateescape`
    decoding or JSON `\\ud83d` escapes); they cannot be encoded and a cut between
    the halves of a pair would leave garbage on the phone.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _is_regional_indicator(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def _is_hangul_l(ch: str) -> bool:
    return "\u1100" <= ch <= "\u115f" or "\ua960" <= ch <= "\ua97f"


def _is_hangul_vt(ch: str) -> bool:
    return "\u1160" <= ch <= "\u11ff" or "\ud7b0" <= ch <= "\ud7ff"


def _is_hangul(ch: str) -> bool:
    return _is_hangul_l(ch) or _is_hangul_vt(ch) or "\uac00" <= ch <= "\ud7a3"


def _extends(ch: str) -> bool:
    """True when `ch` attaches to the character before it (UAX #29 Extend/SpacingMark, roughly)."""
    if ch < "\u0300":  # fast path: Latin-1 and friends never extend
        return False
    return (
        ch == _ZWJ
        or ch == "\u200c"  # ZWNJ
        or "\ufe00" <= ch <= "\ufe0f"  # variation selectors (emoji/text presentation)
        or "\U000e0100" <= ch <= "\U000e01ef"
        or "\U0001f3fb" <= ch <= "\U0001f3ff"  # emoji skin-tone modifiers
        or "\U000e0020" <= ch <= "\U000e007f"  # tag characters (subdivision flags)
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")  # combining, enclosing, spacing marks
    )


def is_boundary(text: str, i: int) -> bool:
    """May `text` be cut between `text[i - 1]` and `text[i]`?"""
    if i <= 0 or i >= len(text):
        return True
    prev, ch = text[i - 1], text[i]
    if prev == "\r" and ch == "\n":
        return False
    if _extends(ch) or prev == _ZWJ:
        return False
    if _is_regional_indicator(ch) and _is_regional_indicator(prev):
        # Flags are pairs: cut only after an even run of regional indicators.
        run = 0
        j = i - 1
        while j >= 0 and _is_regional_indicator(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0
    if _is_hangul_vt(ch) and _is_hangul(prev):
        return False
    return not (_is_hangul_l(prev) and _is_hangul(ch))


def boundary_at_or_before(text: str, i: int) -> int:
    """The largest grapheme boundary <= i, or i itself when the cluster is absurdly long."""
    j = i
    while j > 0 and i - j < _MAX_CLUSTER:
        if is_boundary(text, j):
            return j
        j -= 1
    return j if j == 0 else i


SizeOf = Callable[[str, bool], int]
"""size_of(text, truncated): bytes of the finished payload carrying `text`."""


def fit(text: str, size_of: SizeOf, limit: int) -> tuple[str, bool]:
    """The longest prefix of `text` (with "…" when cut) whose payload is <= limit bytes.

    Returns (text, truncated). Raises PayloadTooLarge when the payload is too big
    even with an empty text.
    """
    text = scrub(text)
    if size_of(text, False) <= limit:
        return text, False
    if size_of("", True) > limit:
        raise PayloadTooLarge(f"payload exceeds {limit} bytes without its text")
    # Every character costs at least one byte, so no prefix longer than the spare
    # bytes can fit: this bounds the search to ~12 probes for a 4 KB limit.
    lo, hi = 0, min(len(text) - 1, limit - size_of("", True))
    while lo < hi:  # invariant: the prefix of length lo fits (or lo == 0)
        mid = (lo + hi + 1) // 2
        if size_of(text[:mid] + ELLIPSIS, True) <= limit:
            lo = mid
        else:
            hi = mid - 1
    end = boundary_at_or_before(text, lo)
    cut = text[:end].rstrip()  # "word …" reads worse than "word…"
    if not is_boundary(text, len(cut)):  # e.g. a ZWJ right before the stripped space
        cut = text[:end]
    if size_of(cut + ELLIPSIS, True) <= limit:
        return cut + ELLIPSIS, True
    return "", True  # not even the ellipsis fits


def json_size(text: str) -> int:
    """Bytes `text` takes inside a compact UTF-8 JSON document, quotes excluded."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` JSON-escaped bytes (with "…" when cut).

    For fields taken from the network (display names, URIs) so that one hostile
    header cannot push the rest of a payload over the limit.
    """
    text = scrub(text)
    if len(text) * 6 <= max_bytes:  # cheap exit: no character escapes to more than 6 bytes
        return text
    return fit(text, lambda t, _cut: json_size(t), max_bytes)[0]
