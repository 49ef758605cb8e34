"""What an alert says, in the user's language.

Each alert is a title and maybe a body, each a *key* with arguments (the caller, the
sender). The keys travel in the push, so an app that ships them in its own strings
(iOS `Localizable.strings`, Android `strings.xml`) shows them in the phone's language:
APNs `title-loc-key`/`title-loc-args`, `loc-key`/`loc-args`; FCM the same as data
fields (`title_loc_key`, `title_loc_args`, `loc_key`, `loc_args`). Beside them the
server puts the finished `title` and `body` in the device's `locale` from the small
table below (English when the locale is unset or not in it), for apps that don't
ship the strings and for whatever shows the push without the app's help.

The templates use Apple's `%@` for the one argument they take. A message's body is
its preview, as it came: only its title is a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipwake.push.notification import (
    CallCancelledNotification,
    CallNotification,
    MessageNotification,
    MissedCallNotification,
    Notification,
    TestNotification,
    VoicemailNotification,
)

DEFAULT_LANGUAGE = "en"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "CALL_TITLE": "Incoming call",
        "CALL_FROM": "Incoming call from %@",
        "CALL_ANSWERED_ELSEWHERE": "Call answered elsewhere",
        "CALL_DECLINED": "Call declined",
        "MISSED_CALL_TITLE": "Missed call",
        "MISSED_CALL_FROM": "Missed call from %@",
        "MESSAGE_TITLE": "New message",
        "MESSAGE_FROM": "Message from %@",
        "VOICEMAIL_TITLE": "New voicemail",
        "VOICEMAIL_FROM": "New voicemail from %@",
        "TEST_TITLE": "Test push",
        "TEST_BODY": "Sent by sipwake push test",
    },
    "de": {
        "CALL_TITLE": "Eingehender Anruf",
        "CALL_FROM": "Eingehender Anruf von %@",
        "CALL_ANSWERED_ELSEWHERE": "Anruf auf einem anderen Gerät angenommen",
        "CALL_DECLINED": "Anruf abgelehnt",
        "MISSED_CALL_TITLE": "Verpasster Anruf",
        "MISSED_CALL_FROM": "Verpasster Anruf von %@",
        "MESSAGE_TITLE": "Neue Nachricht",
        "MESSAGE_FROM": "Nachricht von %@",
        "VOICEMAIL_TITLE": "Neue Sprachnachricht",
        "VOICEMAIL_FROM": "Neue Sprachnachricht von %@",
        "TEST_TITLE": "Test-Push",
        "TEST_BODY": "Gesendet von sipwake push test",
    },
    "fr": {
        "CALL_TITLE": "Appel entrant",
        "CALL_FROM": "Appel entrant de %@",
        "CALL_ANSWERED_ELSEWHERE": "Appel pris sur un autre appareil",
        "CALL_DECLINED": "Appel refusé",
        "MISSED_CALL_TITLE": "Appel manqué",
        "MISSED_CALL_FROM": "Appel manqué de %@",
        "MESSAGE_TITLE": "Nouveau message",
        "MESSAGE_FROM": "Message de %@",
        "VOICEMAIL_TITLE": "Nouveau message vocal",
        "VOICEMAIL_FROM": "Nouveau message vocal de %@",
        "TEST_TITLE": "Notification de test",
        "TEST_BODY": "Envoyée par sipwake push test",
    },
    "es": {
        "CALL_TITLE": "Llamada entrante",
        "CALL_FROM": "Llamada entrante de %@",
        "CALL_ANSWERED_ELSEWHERE": "Llamada contestada en otro dispositivo",
        "CALL_DECLINED": "Llamada rechazada",
        "MISSED_CALL_TITLE": "Llamada perdida",
        "MISSED_CALL_FROM": "Llamada perdida de %@",
        "MESSAGE_TITLE": "Nuevo mensaje",
        "MESSAGE_FROM": "Mensaje de %@",
        "VOICEMAIL_TITLE": "Nuevo mensaje de voz",
        "VOICEMAIL_FROM": "Nuevo mensaje de voz de %@",
        "TEST_TITLE": "Notificación de prueba",
        "TEST_BODY": "Enviada por sipwake push test",
    },
    "pt": {
        "CALL_TITLE": "Chamada recebida",
        "CALL_FROM": "Chamada recebida de %@",
        "CALL_ANSWERED_ELSEWHERE": "Chamada atendida em outro dispositivo",
        "CALL_DECLINED": "Chamada recusada",
        "MISSED_CALL_TITLE": "Chamada perdida",
        "MISSED_CALL_FROM": "Chamada perdida de %@",
        "MESSAGE_TITLE": "Nova mensagem",
        "MESSAGE_FROM": "Mensagem de %@",
        "VOICEMAIL_TITLE": "Nova mensagem de voz",
        "VOICEMAIL_FROM": "Nova mensagem de voz de %@",
        "TEST_TITLE": "Notificação de teste",
        "TEST_BODY": "Enviada por sipwake push test",
    },
    "it": {
        "CALL_TITLE": "Chiamata in arrivo",
        "CALL_FROM": "Chiamata in arrivo da %@",
        "CALL_ANSWERED_ELSEWHERE": "Chiamata risposta su un altro dispositivo",
        "CALL_DECLINED": "Chiamata rifiutata",
        "MISSED_CALL_TITLE": "Chiamata persa",
        "MISSED_CALL_FROM": "Chiamata persa da %@",
        "MESSAGE_TITLE": "Nuovo messaggio",
        "MESSAGE_FROM": "Messaggio da %@",
        "VOICEMAIL_TITLE": "Nuovo messaggio vocale",
        "VOICEMAIL_FROM": "Nuovo messaggio vocale da %@",
        "TEST_TITLE": "Notifica di prova",
        "TEST_BODY": "Inviata da sipwake push test",
    },
    "nl": {
        "CALL_TITLE": "Inkomende oproep",
        "CALL_FROM": "Inkomende oproep van %@",
        "CALL_ANSWERED_ELSEWHERE": "Oproep elders beantwoord",
        "CALL_DECLINED": "Oproep geweigerd",
        "MISSED_CALL_TITLE": "Gemiste oproep",
        "MISSED_CALL_FROM": "Gemiste oproep van %@",
        "MESSAGE_TITLE": "Nieuw bericht",
        "MESSAGE_FROM": "Bericht van %@",
        "VOICEMAIL_TITLE": "Nieuw voicemailbericht",
        "VOICEMAIL_FROM": "Nieuw voicemailbericht van %@",
        "TEST_TITLE": "Testmelding",
        "TEST_BODY": "Verzonden door sipwake push test",
    },
}


def language(locale: str) -> str:
    """The table's language for a device locale: "de-AT", "de_AT" and "DE" → "de";
    unset or not in the table → "en"."""
    primary = locale.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in STRINGS else DEFAULT_LANGUAGE


def render(lang: str, key: str, args: tuple[str, ...]) -> str:
    """The template of `key` in `lang` with each `%@` replaced by the next argument
    (split first, so an argument holding "%@" stays as it is)."""
    parts = STRINGS.get(lang, STRINGS[DEFAULT_LANGUAGE])[key].split("%@")
    out = [parts[0]]
    for n, part in enumerate(parts[1:]):
        out += [args[n] if n < len(args) else "", part]
    return "".join(out)


@dataclass(frozen=True, slots=True)
class AlertText:
    """An alert's title and body as keys with arguments; no body key: no body (or, for
    a message, the preview)."""

    title_key: str
    title_args: tuple[str, ...] = ()
    body_key: str = ""
    body_args: tuple[str, ...] = ()

    def title(self, lang: str) -> str:
        return render(lang, self.title_key, self.title_args)

    def body(self, lang: str) -> str:
        return render(lang, self.body_key, self.body_args) if self.body_key else ""


def _who(name: str, number: str) -> str:
    """The caller as a line shows them: "Alice (+4930…)", or whichever is known."""
    if name and number and name != number:
        return f"{name} ({number})"
    return name or number


def alert_text(n: Notification, privacy: bool) -> AlertText:
    """What the alert for `n` says. Privacy: no names, so no arguments."""
    if isinstance(n, CallNotification):
        who = "" if privacy else _who(n.caller_name, n.caller_number)
        return AlertText("CALL_TITLE", (), "CALL_FROM" if who else "", (who,) if who else ())
    if isinstance(n, CallCancelledNotification):
        key = "CALL_ANSWERED_ELSEWHERE" if n.reason == "answered_elsewhere" else "CALL_DECLINED"
        return AlertText(key)
    if isinstance(n, MissedCallNotification):
        who = "" if privacy else _who(n.caller_name, n.caller_number)
        return AlertText("MISSED_CALL_TITLE", (), "MISSED_CALL_FROM" if who else "",
                         (who,) if who else ())  # fmt: skip
    if isinstance(n, MessageNotification):
        sender = "" if privacy else (n.from_name or n.from_number)
        return AlertText("MESSAGE_FROM", (sender,)) if sender else AlertText("MESSAGE_TITLE")
    if isinstance(n, VoicemailNotification):
        who = "" if privacy else n.from_name
        return AlertText("VOICEMAIL_TITLE", (), "VOICEMAIL_FROM" if who else "",
                         (who,) if who else ())  # fmt: skip
    if isinstance(n, TestNotification):
        return AlertText("TEST_TITLE", (), "TEST_BODY")
    raise TypeError(f"unknown notification {type(n).__name__}")  # pragma: no cover
