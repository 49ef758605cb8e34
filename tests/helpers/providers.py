"""The strict APNs and FCM stand-ins (tests/helpers/) started together, with the keys they
check and the `[push.apns]` / `[push.fcm]` TOML that points a configuration at them:
for tests that drive the installed `sipwake` commands against both providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.apns_standin import APNsStandIn
from tests.helpers.fcm_standin import FCMStandIn
from tests.helpers.push import (
    BUNDLE,
    KEY_ID,
    PROJECT,
    SA_EMAIL,
    SA_KEY_ID,
    TEAM_ID,
    write_apns_key,
    write_service_account,
)


@dataclass
class StandIns:
    apns: APNsStandIn
    fcm: FCMStandIn
    apns_key_file: str
    service_account_file: str

    def toml(self) -> str:
        """The `[push.apns]` and `[push.fcm]` sections for these stand-ins (plain HTTP/2,
        so `allow_insecure`)."""
        return f"""
[push.apns]
team_id = "{TEAM_ID}"
key_id = "{KEY_ID}"
key_file = "{self.apns_key_file}"
topic = "{BUNDLE}"
url = "{self.apns.url}"
sandbox_url = "{self.apns.url}"
allow_insecure = true

[push.fcm]
project_id = "{PROJECT}"
service_account_file = "{self.service_account_file}"
url = "{self.fcm.url}"
token_url = "{self.fcm.token_url}"
allow_insecure = true
"""


@asynccontextmanager
async def push_standins(folder: Path) -> AsyncIterator[StandIns]:
    """Both stand-ins running on 127.0.0.1, their keys written under `folder`."""
    key_file, key = write_apns_key(folder)
    # token_uri points nowhere: the configuration's token_url must win over it
    sa_file, sa_key = write_service_account(folder, "https://oauth2.invalid/token")
    apns = await APNsStandIn(team_id=TEAM_ID, key_id=KEY_ID, public_key=key.public_key(),
                             topics={BUNDLE}).start()
    try:
        fcm = await FCMStandIn(project_id=PROJECT, client_email=SA_EMAIL, key_id=SA_KEY_ID,
                               public_key=sa_key.public_key()).start()
        try:
            yield StandIns(apns, fcm, key_file, sa_file)
        finally:
            await fcm.close()
    finally:
        await apns.close()
