"""push_setup: a provider's settings are its config section, key by key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sipwake.config import ApnsConfig, FcmConfig, PushConfig
from sipwake.push import APNsProvider, APNsSettings, FCMProvider, FCMSettings
from sipwake.push_setup import build_push
from tests.helpers.push import BUNDLE, KEY_ID, PROJECT, TEAM_ID


@pytest.mark.parametrize(("section", "settings"),
                         [(ApnsConfig, APNsSettings), (FcmConfig, FCMSettings)])
def test_every_config_key_is_a_settings_field_with_the_same_default(
        section: type[Any], settings: type[Any]) -> None:
    """Declared twice (push/ does not import the config), passed by name. (The
    credentials have no default in the settings: a provider needs them.)"""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    for key in dataclasses.fields(section):
        assert key.name in fields, f"{section.__name__}.{key.name}: no {settings.__name__} field"
        default = fields[key.name].default
        assert default in (key.default, dataclasses.MISSING), key.name


async def test_the_providers_get_every_key_of_their_section(
        apns_key: tuple[str, ec.EllipticCurvePrivateKey],
        service_account: tuple[Path, rsa.RSAPrivateKey]) -> None:
    config = PushConfig(
        apns=ApnsConfig(team_id=TEAM_ID, key_id=KEY_ID, key_file=apns_key[0], topic=BUNDLE,
                        url="http://apns.test:8080", sandbox_url="http://sandbox.test:8081",
                        allow_insecure=True),
        fcm=FcmConfig(project_id=PROJECT, service_account_file=str(service_account[0]),
                      url="http://fcm.test:8082", token_url="http://oauth.test:8083/token",
                      allow_insecure=True),
    )
    service = build_push(config, store=None)  # type: ignore[arg-type]
    try:
        assert service.sink is None
        apns, fcm = service._providers["apns"], service._providers["fcm"]
        assert isinstance(apns, APNsProvider) and isinstance(fcm, FCMProvider)
        assert apns.settings == APNsSettings(
            team_id=TEAM_ID, key_id=KEY_ID, key_file=apns_key[0], topic=BUNDLE,
            url="http://apns.test:8080", sandbox_url="http://sandbox.test:8081", ca_file="",
            allow_insecure=True)
        assert fcm.settings == FCMSettings(
            project_id=PROJECT, service_account_file=str(service_account[0]),
            url="http://fcm.test:8082", token_url="http://oauth.test:8083/token", ca_file="",
            allow_insecure=True)
        assert fcm.auth.token_url == "http://oauth.test:8083/token"
    finally:
        await service.close()
