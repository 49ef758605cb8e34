"""Talking to a node's HTTP API in tests: the Authorization headers, and the body an
iPhone uploads to /v1/devices."""

from __future__ import annotations

import base64

ALERT = "b2" * 32
VOIP = "a1" * 32
IOS = {"platform": "ios", "push_token": ALERT, "voip_token": VOIP, "topic": "com.example.dialer"}


def basic(user: str, password: str = "secret") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
