"""Build the node's PushService from `[push.apns]` / `[push.fcm]`.

A provider section counts as configured when any of its credential keys is set;
then all of them must be. With neither configured, pushes go to the developer
sink (`GET /v1/dev/pushes`) instead of Apple or Google.

A provider's settings are its config section passed key by key
(`dataclasses.asdict`): each `[push.apns]` key is the `APNsSettings` field of the
same name (`[push.fcm]`: `FCMSettings`), which add a few that are not configured
(timeouts, pool sizes). push/ does not import config.py (docs/architecture.md), so
the keys are declared twice; tests/push/test_push_setup.py checks they agree.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sipwake.config import ApnsConfig, ConfigError, FcmConfig, PushConfig
from sipwake.push.apns import APNsProvider, APNsSettings
from sipwake.push.fcm import FCMProvider, FCMSettings
from sipwake.push.provider import Provider
from sipwake.push.service import OutboxStore, PushLog, PushObserver, PushService

log = logging.getLogger("sipwake.push")


def build_push(
    config: PushConfig,
    store: PushLog,
    outbox: OutboxStore | None = None,
    observer: PushObserver | None = None,
    node: str = "",
) -> PushService:
    """The push service; `outbox` keeps accepted pushes across restarts (call
    `await service.start()` to resume them), `observer` gets its metrics."""
    apns = _apns(config.apns)
    fcm = _fcm(config.fcm)
    service = PushService(store, apns=apns, fcm=fcm, outbox=outbox, observer=observer,
                          node=node)  # fmt: skip
    if service.sink is not None:
        log.warning(
            "no [push.apns] or [push.fcm] credentials: pushes are not sent, "
            "only logged and shown at GET /v1/dev/pushes"
        )
    return service


def build_providers(config: PushConfig) -> dict[str, Provider]:
    """The configured providers by name, without a service around them (`sipwake push
    test`); empty when neither section has credentials."""
    found: dict[str, Provider | None] = {"apns": _apns(config.apns), "fcm": _fcm(config.fcm)}
    return {name: p for name, p in found.items() if p is not None}


def _require(section: str, values: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """False when the section's `keys` are left empty; ConfigError when they are half
    filled in."""
    if not any(values[k] for k in keys):
        return False
    missing = [f"'{section}.{k}'" for k in keys if not values[k]]
    if missing:
        raise ConfigError(f"[{section}] is incomplete: set {', '.join(missing)}")
    return True


def _apns(cfg: ApnsConfig) -> APNsProvider | None:
    section = dataclasses.asdict(cfg)
    if not _require("push.apns", section, ("team_id", "key_id", "key_file")):
        return None
    try:
        provider = APNsProvider(APNsSettings(**section))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[push.apns]: {exc}") from None
    log.info("APNs provider: team %s, key %s, %s", cfg.team_id, cfg.key_id, cfg.url)
    return provider


def _fcm(cfg: FcmConfig) -> FCMProvider | None:
    section = dataclasses.asdict(cfg)
    if not _require("push.fcm", section, ("project_id", "service_account_file")):
        return None
    try:
        provider = FCMProvider(FCMSettings(**section))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"[push.fcm]: {exc}") from None
    log.info("FCM provider: project %s, %s", cfg.project_id, cfg.url)
    return provider
