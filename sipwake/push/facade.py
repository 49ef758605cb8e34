"""The push layer as the services see it: send one notification to one device, or to
several at once, and learn how each went. PushService is the implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sipwake.push.notification import Notification
from sipwake.store.models import Device


class Result(Protocol):
    @property
    def device_id(self) -> str: ...

    @property
    def outcome(self) -> str: ...


class Pusher(Protocol):
    async def send(self, device: Device, notification: Notification) -> object: ...


class Broadcaster(Protocol):
    async def send_all(
        self, devices: list[Device], notification: Notification
    ) -> Sequence[Result]: ...
