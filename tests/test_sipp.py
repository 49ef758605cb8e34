"""SIPp (an independent SIP implementation) registers against sipwake."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwake.store.models import Binding, Device
from tests.helpers.node import DOMAIN, Running
from tests.helpers.sipp import run_sipp
from tests.helpers.wait import wait_for

SCENARIOS = Path(__file__).parent / "sipp"
USERS = 20


def user_line(name: str, password: str, token: str) -> str:
    """One injection-file row; SIPp expands [authentication] only when it comes whole
    from a field (nested [fieldN] inside it is mangled by SIPp 3.6)."""
    auth = f"[authentication username={name} password={password}]"
    return f"{name};{password};{DOMAIN};{token};{auth}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_registers_with_digest_and_push_params(
    running: Running, tmp_path: Path, transport: str
) -> None:
    registered: list[Binding] = []

    class Listener:
        def on_registered(self, binding: Binding, device: Device | None, at: float) -> None:
            registered.append(binding)

    running.server.registrar.listeners.append(Listener())
    lines = ["SEQUENTIAL"]
    for i in range(USERS):
        name = f"sipp{i}"
        await running.add_user(name, f"pw-{i}")
        lines.append(user_line(name, f"pw-{i}", f"{i:04x}{'ab' * 30}"))
    (tmp_path / "users.csv").write_text("\n".join(lines) + "\n")
    mode = "u1" if transport == "udp" else "t1"
    code, out = await run_sipp(
        running.addr(transport),
        ["-sf", str(SCENARIOS / "register_auth.xml"), "-inf", "users.csv",
         "-m", str(USERS), "-r", "50", "-t", mode],
        tmp_path,
    )  # fmt: skip
    errors = "".join(p.read_text() for p in tmp_path.glob("*_errors.log"))
    assert code == 0, out[-2000:] + errors[-2000:]
    store = running.server.store
    assert sorted(b.aor for b in registered) == sorted(
        f"sip:sipp{i}@{DOMAIN}" for i in range(USERS)
    )
    for binding in registered:
        assert binding.user_agent == "SIPp" and binding.device_id
        assert binding.flow.startswith("tcp-") if transport == "tcp" else not binding.flow
    registrar = running.server.registrar
    if transport == "tcp":
        # SIPp closes its TCP connection when done: the bindings go, the devices stay
        await wait_for(lambda: not any(registrar.bindings.values()))
    for i in range(USERS):
        aor = f"sip:sipp{i}@{DOMAIN}"
        assert len(registrar.live_bindings(aor)) == (1 if transport == "udp" else 0)
        (device,) = await store.devices(aor)
        assert device.voip_token == f"{i:04x}{'ab' * 30}"
        assert device.topic == "com.example.dialer" and device.enabled
