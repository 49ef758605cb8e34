"""What a push token looks like: one rule for REGISTER (RFC 8599 pn-prid), the HTTP
device API and the request encoders, so a token accepted at the door is never the
one a provider request later refuses. `token_problem` says which rule failed."""

from __future__ import annotations

import re

APNS_MIN, APNS_MAX = 16, 400  # hex digits; Apple's tokens are 64 today, longer ones may come
FCM_MAX = 4096
APNS_TOKEN = re.compile(rf"[0-9A-Fa-f]{{{APNS_MIN},{APNS_MAX}}}")
FCM_TOKEN = re.compile(rf"[A-Za-z0-9_:.\-]{{1,{FCM_MAX}}}")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def apns_token_problem(token: str) -> str:
    """Why `token` is not an APNs device token, or "" when it is one."""
    if not token:
        return "APNs token missing"
    if not _HEX_DIGITS.issuperset(token):  # in C: this runs for every REGISTER
        return "APNs tokens are hexadecimal digits only"
    if not APNS_MIN <= len(token) <= APNS_MAX:
        return f"APNs tokens are {APNS_MIN}-{APNS_MAX} hexadecimal digits, not {len(token)}"
    return ""


def fcm_token_problem(token: str) -> str:
    """Why `token` is not an FCM registration token, or "" when it is one."""
    if not token:
        return "FCM token missing"
    if len(token) > FCM_MAX:
        return f"FCM tokens are at most {FCM_MAX} characters, not {len(token)}"
    if not FCM_TOKEN.fullmatch(token):
        return "FCM tokens are letters, digits and _ : . - only"
    return ""


def token_problem(provider: str, token: str) -> str:
    return apns_token_problem(token) if provider == "apns" else fcm_token_problem(token)
