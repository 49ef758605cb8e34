"""Build the node's PushService from `[push.apns]` / `[push.fcm]`.

A provider section counts as configured when any of its credential keys is set;
then all of them must be. With neither configured, pushes go to the developer
sink (`GET /v1/dev/pushes`) instead of Apple or Google.
"""

from __future__ import annotations

import logging

from sipwake.config import ApnsConfig, ConfigError, FcmConfig, PushConfig
from sipwake.push.apns import APNsProvider, APNsSettings
from sipwake.push.fcm import FCMProvider, FCMSettings
from sipwake.push.service import OutboxStore, PushLog, PushObserver, PushService

log = logging.getLogger("sipwake.push")


def build_push(
    config: PushConfig,
    store: PushLog,
    outbox: OutboxStore | None = None,
    observer: PushObserver | None = None,
) -> PushService:
    """The push service; `outbox` keeps accepted pushes across restarts (call
    `await service.start()` to resume them), `observer` gets its metrics."""
    apns = _apns(config.apns)
    fcm = _fcm(config.fcm)
    service = PushService(store, apns=apns, fcm=fcm, outbox=outbox, observer=observer)
    if service.sink is not None:
        log.warning(
            "no [push.apns] or [push.fcm] credentials: pushes are not sent, "
            "only logged and shown at GET /v1/dev/pushes"
        )
    return service


def _require(section: str, values: dict[str, str]) -> bool:
    """False when the section is left empty; ConfigError when it is half filled in."""
    if not any(values.values()):
        return False
    missing = [f"'{section}.{k}'" for k, v in values.items() if not v]
    if missing:
        raise ConfigError(f"[{section}] is incomplete: set {', '.join(missing)}")
    return True


def _apns(cfg: ApnsConfig) -> APNsProvider | None:
    keys = {"team_id": cfg.team_id, "key_id": cfg.key_id, "key_file": cfg.key_file}
    if not _require("push.apns", keys):
        return None
    settings = APNsSettings(
        team_id=cfg.team_id,
        key_id=cfg.key_id,
        key_file=cfg.key_file,
        topic=cfg.topic,
        url=cfg.url,
        sandbox_url=cfg.sandbox_url,
        ca_file=cfg.ca_file,
        allow_insecure=cfg.allow_insecure,
    )
    try:
        provider = APNsProvider(settings)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[push.apns]: {exc}") from None
    log.info("APNs provider: team %s, key %s, %s", cfg.team_id, cfg.key_id, cfg.url)
    return provider


def _fcm(cfg: FcmConfig) -> FCMProvider | None:
    keys = {"project_id": cfg.project_id, "service_account_file": cfg.service_account_file}
    if not _require("push.fcm", keys):
        return None
    settings = FCMSettings(
        project_id=cfg.project_id,
        service_account_file=cfg.service_account_file,
        url=cfg.url,
        token_url=cfg.token_url,
        ca_file=cfg.ca_file,
        allow_insecure=cfg.allow_insecure,
    )
    try:
        provider = FCMProvider(settings)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"[push.fcm]: {exc}") from None
    log.info("FCM provider: project %s, %s", cfg.project_id, cfg.url)
    return provider
