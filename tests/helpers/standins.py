"""In-memory stand-ins for what the services name as their dependencies, for unit
tests on a SipNode (tests/helpers/sipnode.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sipwake.store.models import Binding, Device, User

DOMAIN = "example.com"


@dataclass
class Locations:
    """Where users are reached, in memory: live bindings and push devices by AOR."""

    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    devices: dict[str, list[Device]] = field(default_factory=dict)

    def live_bindings(self, aor: str) -> list[Binding]:
        return list(self.bindings.get(aor, []))

    async def devices_of(self, aor: str) -> list[Device]:
        return list(self.devices.get(aor, []))


class Users:
    """The user directory, in memory: `names` exist in DOMAIN (with no credentials)."""

    def __init__(self, *names: str) -> None:
        self.users = {n: User(n, DOMAIN, "", "") for n in names}

    async def get(self, username: str, domain: str) -> User | None:
        return self.users.get(username)
