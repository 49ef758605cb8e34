"""Message previews as the strict APNs and FCM stand-ins (tests/push/) receive them:
5,000-character bodies mixing ASCII, accents, CJK and emoji ZWJ sequences."""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipwake.push import APNsProvider, APNsSettings, FCMProvider, FCMSettings, PushService
from sipwake.push.truncate import ELLIPSIS, is_boundary
from sipwake.store.models import Device
from tests.helpers.apns_standin import APNsStandIn
from tests.helpers.fcm_standin import FCMStandIn
from tests.helpers.messaging import BOB, cpim, send, setup
from tests.helpers.node import Running, ServerFactory
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

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 👨‍👩‍👧‍👦
PIECES = [
    "Hello, world! ", "\"quoted\" \\ ", "déjà vu ", "e\u0301", "Ångström ", "ñandú ",
    "漢字かな交じり文", "한국어 ", FAMILY, "\U0001f469\u200d\U0001f4bb", "\U0001f44d\U0001f3fd",
    "\U0001f1eb\U0001f1f7", "\u2764\ufe0f", "\n", "\t",
]


def mixed_body(seed: int, length: int = 5000) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < length:
        piece = rng.choice(PIECES)
        parts.append(piece)
        size += len(piece)
    return "".join(parts)


def check_preview(text: str, preview: str, truncated: object) -> None:
    assert truncated in (True, "true")
    assert preview.endswith(ELLIPSIS)
    cut = preview[: -len(ELLIPSIS)]
    assert text.startswith(cut) and len(cut) > 500  # most of the room goes to the text
    assert is_boundary(text, len(cut))  # no emoji or accent cut in half


@dataclass
class Providers:
    apns: APNsStandIn
    fcm: FCMStandIn
    apns_key_file: str
    service_account_file: str

    def service(self, r: Running) -> PushService:
        """A push service on both stand-ins, installed in the running server."""
        service = PushService(
            r.server.store,
            apns=APNsProvider(APNsSettings(
                team_id=TEAM_ID, key_id=KEY_ID, key_file=self.apns_key_file, topic=BUNDLE,
                url=self.apns.url, sandbox_url=self.apns.url, allow_insecure=True,
            )),
            fcm=FCMProvider(FCMSettings(
                project_id=PROJECT, service_account_file=self.service_account_file,
                url=self.fcm.url, token_url=self.fcm.token_url, allow_insecure=True,
            )),
        )  # fmt: skip
        r.server.push = service  # closed by the server's stop
        r.server.inbox.pushes.pusher = service  # the message pushes go through it
        return service


@pytest.fixture
async def providers(tmp_path: Path) -> AsyncIterator[Providers]:
    key_file, key = write_apns_key(tmp_path)
    sa_file, sa_key = write_service_account(tmp_path, "https://oauth2.invalid/token")
    apns = await APNsStandIn(team_id=TEAM_ID, key_id=KEY_ID, public_key=key.public_key(),
                             topics={BUNDLE}).start()
    fcm = await FCMStandIn(project_id=PROJECT, client_email=SA_EMAIL, key_id=SA_KEY_ID,
                           public_key=sa_key.public_key()).start()
    yield Providers(apns, fcm, key_file, sa_file)
    await apns.close()
    await fcm.close()


async def test_previews_fit_apns_and_fcm(
    start_server: ServerFactory, providers: Providers
) -> None:
    apns, fcm = providers.apns, providers.fcm
    r, alice = await setup(start_server)
    service = providers.service(r)  # the server stops (closes) it
    ios_token = secrets.token_hex(32)
    for device in (
        Device("iphone", BOB, "apns", "ios", push_token=ios_token, topic=BUNDLE),
        Device("pixel", BOB, "fcm", "android", push_token="fcm-token-1", topic=PROJECT),
    ):
        await r.server.store.put_device(device)
    texts = [mixed_body(seed) for seed in range(4)]
    for i, text in enumerate(texts):
        if i % 2:
            resp = await send(alice, "bob", cpim(text, f"big-{i}"), "message/cpim")
        else:
            resp = await send(alice, "bob", text.encode())
        assert resp.status == 202
        await r.server.inbox.pushes.idle(BOB)
    assert service is r.server.push
    assert apns.violations == [] and fcm.violations == []
    assert len(apns.requests) == len(texts) and len(fcm.sends) == len(texts)
    for i, (request, sent) in enumerate(zip(apns.requests, fcm.sends, strict=True)):
        assert request.status == 200 and sent.status == 200
        assert len(request.body) <= 4096
        payload = request.payload
        check_preview(texts[i], payload["preview"], payload["truncated"])
        assert payload["aps"]["alert"]["body"] == payload["preview"]
        assert payload["unread"] == i + 1 and payload["aps"]["badge"] == i + 1
        data = sent.message["data"]
        assert sum(len(k.encode()) + len(v.encode()) for k, v in data.items()) <= 4096
        check_preview(texts[i], data["preview"], data["truncated"])
        assert data["unread"] == str(i + 1)
