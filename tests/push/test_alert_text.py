"""Localised alerts: the keys for the app's own strings (APNs loc-key/loc-args, FCM
loc_key/loc_args) and the server's title/body in the device's locale, for every
alert kind; privacy keeps names out; payload limits hold with long names in wordy
languages."""

from __future__ import annotations

import json
import re
import time

import pytest

from sipwake.push import apns_payload, fcm_payload
from sipwake.push.alert_text import STRINGS, language, render
from sipwake.push.notification import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    MissedCallNotification,
    VoicemailNotification,
)
from tests.helpers.push import BUNDLE, android_device, ios_device

NOW = 1_764_180_000


def call(name: str = "Bob Builder", number: str = "+15551234") -> CallNotification:
    return CallNotification(call_id="park-1", caller_uri="sip:bob@example.com",
                            caller_number=number, caller_name=name,
                            pickup_uri="sip:pickup-park-1@example.com", expires_at=NOW + 30)


def test_every_language_has_every_key_with_its_arguments() -> None:
    english = STRINGS["en"]
    assert {"en", "de", "fr", "es", "pt", "it"} <= STRINGS.keys()
    for lang, table in STRINGS.items():
        assert table.keys() == english.keys(), lang
        for key, template in table.items():
            assert template.count("%@") == english[key].count("%@"), (lang, key)
            assert template.strip() == template and template, (lang, key)


@pytest.mark.parametrize(("locale", "lang"), [
    ("de", "de"), ("de-AT", "de"), ("de_CH", "de"), ("DE", "de"), ("pt-BR", "pt"),
    ("fr-CA", "fr"), ("", "en"), ("zh-Hant-TW", "en"), ("xx", "en"), ("  it ", "it"),
])  # fmt: skip
def test_locale_to_language(locale: str, lang: str) -> None:
    assert language(locale) == lang


def test_an_argument_is_put_in_as_it_is() -> None:
    assert render("en", "CALL_FROM", ("100%@ sure",)) == "Incoming call from 100%@ sure"
    assert render("xx", "MISSED_CALL_TITLE", ()) == "Missed call"


def alert(device_locale: str, n: object, **kw: object) -> dict[str, object]:
    device = ios_device(mode="alert", locale=device_locale, **kw)
    request = apns_payload.build(device, n, BUNDLE)  # type: ignore[arg-type]
    assert request.push_type == "alert"
    aps = json.loads(request.body)["aps"]
    return aps["alert"]  # type: ignore[no-any-return]


def test_call_alert_in_the_device_language_with_the_keys() -> None:
    assert alert("de-AT", call()) == {
        "title": "Eingehender Anruf", "title-loc-key": "CALL_TITLE",
        "body": "Eingehender Anruf von Bob Builder (+15551234)",
        "loc-key": "CALL_FROM", "loc-args": ["Bob Builder (+15551234)"],
    }  # fmt: skip
    # no name: the number alone; no caller at all: the title alone
    assert alert("", call(name=""))["loc-args"] == ["+15551234"]
    assert alert("", call(name="", number="")) == {"title": "Incoming call",
                                                   "title-loc-key": "CALL_TITLE"}


def test_each_kind_has_its_keys() -> None:
    missed = MissedCallNotification(call_id="park-1", caller_uri="sip:bob@example.com",
                                    caller_number="", caller_name="Bob", at=NOW)
    assert alert("it", missed) == {
        "title": "Chiamata persa", "title-loc-key": "MISSED_CALL_TITLE",
        "body": "Chiamata persa da Bob", "loc-key": "MISSED_CALL_FROM", "loc-args": ["Bob"],
    }  # fmt: skip
    declined = CallCancelledNotification(call_id="park-1", reason="declined")
    assert alert("es", declined) == {"title": "Llamada rechazada", "title-loc-key": "CALL_DECLINED"}
    vm = VoicemailNotification(from_uri="sip:bob@example.com", from_name="Bob", duration=12,
                               new=2, old=5, badge=3)
    assert alert("pt-BR", vm) == {
        "title": "Nova mensagem de voz", "title-loc-key": "VOICEMAIL_TITLE",
        "body": "Nova mensagem de voz de Bob", "loc-key": "VOICEMAIL_FROM", "loc-args": ["Bob"],
    }  # fmt: skip
    # a message: the sender is the title's argument, the preview stays the body as it is
    msg = MessageNotification(message_id="7", from_uri="sip:bob@example.com",
                              from_number="+15551234", from_name="Bob", body="salut ça va ?",
                              unread=1)
    assert alert("fr", msg) == {"title": "Message de Bob", "title-loc-key": "MESSAGE_FROM",
                                "title-loc-args": ["Bob"], "body": "salut ça va ?"}


def test_privacy_sends_keys_without_names() -> None:
    msg = MessageNotification(message_id="7", from_uri="sip:bob@example.com",
                              from_number="+15551234", from_name="Bob", body="secret", unread=1)
    for n in (call(), msg):
        shown = alert("de", n, privacy=True)
        assert "loc-args" not in shown and "title-loc-args" not in shown
        assert "Bob" not in json.dumps(shown) and "1555" not in json.dumps(shown)
    assert alert("de", call(), privacy=True) == {"title": "Eingehender Anruf",
                                                 "title-loc-key": "CALL_TITLE"}
    data = fcm_payload.build(android_device(privacy=True, locale="de"), msg, NOW)["data"]
    assert data["title"] == "Neue Nachricht" and "title_loc_args" not in data


def test_fcm_carries_the_same_as_data_strings() -> None:
    data = fcm_payload.build(android_device(locale="pt_PT"), call(), NOW)["data"]
    assert data["title"] == "Chamada recebida" and data["title_loc_key"] == "CALL_TITLE"
    assert data["body"] == "Chamada recebida de Bob Builder (+15551234)"
    assert data["loc_key"] == "CALL_FROM"
    assert json.loads(data["loc_args"]) == ["Bob Builder (+15551234)"]
    assert all(isinstance(v, str) for v in data.values())
    # the contract's fields are all still there, unchanged
    assert data["caller_name"] == "Bob Builder" and data["type"] == "call"


HOSTILE = ["ü" * 1000, '"' * 1000, "\x01" * 1000, "😀" * 1000, "\\" * 1000]


@pytest.mark.parametrize("name", HOSTILE, ids=["umlaut", "quote", "control", "emoji", "backslash"])
@pytest.mark.parametrize("locale", ["pt", "de", "it"])
def test_long_names_in_wordy_languages_fit(name: str, locale: str) -> None:
    n = CallNotification(call_id="c" * 1000, caller_uri="sip:" + name, caller_number=name,
                         caller_name=name, pickup_uri="sip:" + name, expires_at=NOW + 30)
    for device in (ios_device(mode="alert", locale=locale), ios_device(locale=locale)):
        request = apns_payload.build(device, n, BUNDLE)
        assert len(request.body) <= request.limit
    data = fcm_payload.build(android_device(locale=locale), n, NOW)["data"]
    assert fcm_payload.data_size(data) <= fcm_payload.DATA_LIMIT
    for kind in (MissedCallNotification(call_id="c" * 1000, caller_uri=name, caller_number=name,
                                        caller_name=name, at=NOW),
                 VoicemailNotification(from_uri=name, from_name=name, duration=1, new=1, old=0)):
        request = apns_payload.build(ios_device(locale=locale), kind, BUNDLE)
        assert len(request.body) <= request.limit
        data = fcm_payload.build(android_device(locale=locale), kind, NOW)["data"]
        assert fcm_payload.data_size(data) <= fcm_payload.DATA_LIMIT
    # a message keeps a preview, cut to what is left
    msg = MessageNotification(message_id=name, from_uri=name, from_number=name, from_name=name,
                              body="Olá, tudo bem? " * 1000, unread=1)
    request = apns_payload.build(ios_device(locale=locale), msg, BUNDLE)
    payload = json.loads(request.body)
    assert len(request.body) <= 4096 and payload["truncated"] is True
    assert len(payload["preview"]) > 100 and payload["aps"]["alert"]["body"] == payload["preview"]
    data = fcm_payload.build(android_device(locale=locale), msg, time.time())["data"]
    assert fcm_payload.data_size(data) <= 4096 and len(data["preview"]) > 100


def test_the_documented_keys_are_the_table() -> None:
    """docs/architecture.md lists every key with its English text."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    for key, text in STRINGS["en"].items():
        assert re.search(rf"`{key}`\s*\|\s*{re.escape(text)}\s*\|", doc), key
