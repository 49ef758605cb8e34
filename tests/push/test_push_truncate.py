"""Message previews cut to fit APNs and FCM limits after serialization."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwake.push import apns_payload, fcm_payload
from sipwake.push.notification import CallNotification, MessageNotification
from sipwake.push.truncate import _MAX_CLUSTER, ELLIPSIS, clip, fit, is_boundary, scrub
from tests.helpers.push import android_device, ios_device

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 👨‍👩‍👧‍👦
ATOMS = [
    "a", "Z", " ", "hello ", "\"", "\\", "\n", "\t", "\x01", "/", "<", "&",
    "é", "e\u0301", "a\u0308\u0323", "ñ", "ø", "ß",  # precomposed and combining accents
    "漢", "字", "かな", "한국어", "\u1100\u1161\u11a8",  # CJK, Hangul syllable and jamo
    FAMILY, "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "1\ufe0f\u20e3",  # ZWJ, skin tone, VS, keycap
    "\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea",  # flags (regional indicator pairs)
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland
    "\U0001f469\u200d\U0001f4bb", "\u0915\u094d\u0937",  # 👩‍💻, Devanagari conjunct
    "\r\n", "\u2028", "\U0001d54f",  # CRLF, line separator, astral letter
]

# Runs of one atom keep the number of draws low while bodies reach ~5,000 characters.
chunks = st.one_of(
    st.tuples(st.sampled_from(ATOMS), st.integers(1, 150)).map(lambda t: t[0] * t[1]),
    st.text(max_size=8),
)
bodies = st.lists(chunks, min_size=30, max_size=70).map("".join)


def message(body: str) -> MessageNotification:
    return MessageNotification(message_id="m-1", from_uri="sip:bob@example.com",
                               from_number="+15551234", from_name="Bob \"the\" Builder",
                               body=body, unread=7, badge=9, deadline=time.time() + 60)


def check_preview(body: str, preview: str, truncated: bool) -> None:
    body = scrub(body)
    assert truncated == (preview != body)
    if truncated:
        assert preview.endswith(ELLIPSIS)
        cut = preview[: -len(ELLIPSIS)]
        assert body.startswith(cut)
        # Never inside a grapheme cluster, unless the cluster is absurdly long.
        if not is_boundary(body, len(cut)):
            start = len(cut)
            while start > 0 and not is_boundary(body, start):
                start -= 1
            assert len(cut) - start >= _MAX_CLUSTER


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(bodies)
def test_previews_fit_both_providers(body: str) -> None:
    n = message(body)
    for device in (ios_device(), ios_device(mode="alert")):
        request = apns_payload.build(device, n, "com.example.dialer")
        assert len(request.body) <= apns_payload.ALERT_LIMIT
        payload = json.loads(request.body.decode("utf-8"))
        assert payload == request.payload
        assert isinstance(payload["truncated"], bool) and payload["unread"] == 7
        assert payload["aps"]["alert"].get("body", "") == payload["preview"]
        check_preview(body, payload["preview"], payload["truncated"])
    message_ = fcm_payload.build(android_device(), n, time.time())
    data = message_["data"]
    assert all(isinstance(v, str) for v in data.values())
    assert fcm_payload.data_size(data) <= fcm_payload.DATA_LIMIT
    fcm_payload.dumps(message_).decode("utf-8")
    assert data["truncated"] in ("true", "false")
    check_preview(body, data["preview"], data["truncated"] == "true")


def test_long_body_is_cut_close_to_the_limit() -> None:
    body = ("Grüße 👋 " + FAMILY + " 漢字かな \"quoted\" ") * 400
    request = apns_payload.build(ios_device(), message(body), "com.example.dialer")
    assert request.payload["truncated"] is True
    assert 4096 - 60 < len(request.body) <= 4096
    data = fcm_payload.build(android_device(), message(body), time.time())["data"]
    assert 4096 - 40 < fcm_payload.data_size(data) <= 4096


def test_escaping_counts() -> None:
    # 2 bytes each once escaped ("\\\"" and "\\\\"); 6 for other control characters.
    for ch, cost in (('"', 2), ("\\", 2), ("\x01", 6), ("é", 2), ("漢", 3), ("😀", 4)):
        text, cut = fit(ch * 1000, lambda t, _c: len(json.dumps(t, ensure_ascii=False)
                                                       .encode()) - 2, 600)
        assert cut and len(text.encode()) - 3 <= 600 and (len(text) - 1) * cost > 600 - cost - 3


def test_clusters_are_kept_whole() -> None:
    def size(t: str, _cut: bool) -> int:
        return len(t.encode())

    for cluster in (FAMILY, "\U0001f1eb\U0001f1f7", "e\u0301\u0302", "1\ufe0f\u20e3",
                    "\U0001f44d\U0001f3fd", "\r\n"):
        text = "x" + cluster * 10
        for limit in range(4, len(text.encode())):
            preview, truncated = fit(text, size, limit)
            assert truncated
            body = preview[:-1]
            assert body == "x" + cluster * ((len(body) - 1) // len(cluster))


def test_flag_pairs_counted_from_the_start() -> None:
    flags = "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea\U0001f1ef\U0001f1f5"
    assert [i for i in range(len(flags) + 1) if is_boundary(flags, i)] == [0, 2, 4, 6]


def test_lone_surrogates_are_replaced_and_pairs_joined() -> None:
    assert scrub("a\ud83d\ude00b") == "a😀b"
    assert scrub("a\ud83db") == "a\ufffdb"
    n = message("x\ud800" * 3000)
    request = apns_payload.build(ios_device(), n, "com.example.dialer")
    request.body.decode("utf-8")


def test_hostile_display_names_are_clipped() -> None:
    huge = "\x01" * 100_000
    n = CallNotification(call_id="c" * 1000, caller_uri="sip:" + huge, caller_number=huge,
                         caller_name=huge, pickup_uri="sip:" + huge, expires_at=2_000_000_000)
    for device in (ios_device(), ios_device(mode="alert")):
        request = apns_payload.build(device, n, "com.example.dialer")
        assert len(request.body) <= request.limit
        assert len(request.collapse_id.encode()) <= 64
    data = fcm_payload.build(android_device(), n, time.time())["data"]
    assert fcm_payload.data_size(data) <= 4096
    assert len(clip("é" * 1000, 100).encode()) <= 100 + len(ELLIPSIS.encode())


def test_message_with_hostile_names_still_carries_a_preview() -> None:
    huge = "\"" * 50_000
    n = MessageNotification(message_id=huge, from_uri=huge, from_number=huge, from_name=huge,
                            body="hello " * 2000, unread=1)
    request = apns_payload.build(ios_device(), n, "com.example.dialer")
    assert len(request.body) <= 4096 and len(request.payload["preview"]) > 100


def test_truncation_is_fast() -> None:
    """Sygnal chops one character per serialization: O(n²) on long bodies."""
    body = ("Grüße 👋 " + FAMILY + " 漢字かな ") * 1000  # ~20k characters
    n = message(body)
    device = ios_device()
    started = time.perf_counter()
    for _ in range(50):
        apns_payload.build(device, n, "com.example.dialer")
    assert (time.perf_counter() - started) / 50 < 0.005  # well under 5 ms per payload
