"""Shared pieces for the push tests: keys, a push log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sipwake.store.models import Device, PushAttempt

TEAM_ID = "TEAM123456"
KEY_ID = "KEY7654321"
BUNDLE = "com.example.dialer"
PROJECT = "sipwake-test"
SA_EMAIL = "push@sipwake-test.iam.gserviceaccount.com"
SA_KEY_ID = "0123456789abcdef"


@dataclass
class MemoryPushLog:
    """The two Store methods the push service uses, with the store's 410 rule."""

    devices: dict[str, Device] = field(default_factory=dict)
    attempts: list[PushAttempt] = field(default_factory=list)
    disable_calls: list[tuple[str, str, float]] = field(default_factory=list)

    def add(self, device: Device) -> Device:
        self.devices[device.device_id] = device
        return device

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool:
        self.disable_calls.append((device_id, reason, token_at))
        device = self.devices.get(device_id)
        if device is None or device.token_updated_at > token_at:
            return False  # the token was uploaded after the provider gave up on it
        device.enabled = False
        device.disabled_reason = reason
        return True

    async def add_push_attempt(self, attempt: PushAttempt) -> None:
        self.attempts.append(attempt)


def ios_device(device_id: str = "iphone", *, token: str = "a" * 64, voip: str = "b" * 64,
               mode: str = "voip", **kw: object) -> Device:
    return Device(device_id=device_id, aor="sip:alice@example.com", provider="apns",
                  platform="ios", push_token=token, voip_token=voip, topic=BUNDLE,
                  call_mode=mode, ringtone="ring.caf", **kw)  # type: ignore[arg-type]


def android_device(device_id: str = "pixel", *, token: str = "fcm-token-1",
                   **kw: object) -> Device:
    return Device(device_id=device_id, aor="sip:alice@example.com", provider="fcm",
                  platform="android", push_token=token, topic=PROJECT,
                  **kw)  # type: ignore[arg-type]


def write_apns_key(directory: Path) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"AuthKey_{KEY_ID}.p8"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path), key


def write_service_account(directory: Path, token_uri: str) -> tuple[str, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = directory / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": SA_KEY_ID,
        "private_key": pem, "client_email": SA_EMAIL, "client_id": "1",
        "token_uri": token_uri,
    }))
    return str(path), key
