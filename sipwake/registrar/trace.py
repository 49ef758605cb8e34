"""Registrations on the timeline (sipwake/timeline.py): a listener, so the registrar
itself stays as it is. One entry per user: when each of its devices registered, from
where, for how long."""

from __future__ import annotations

from sipwake.store.models import Binding, Device
from sipwake.timeline import Trace


class RegistrationTrace:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def on_registered(self, binding: Binding, device: Device | None, received_at: float) -> None:
        self.trace.record(
            "register", binding.aor, "registered",
            device=binding.device_id or binding.instance or binding.received,  # no token
            received=binding.received, expires_at=binding.expires_at,
            push=device.provider if device is not None else "",
        )  # fmt: skip
