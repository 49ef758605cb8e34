"""What a REGISTER costs the store: a refresh that changes nothing reads nothing and
writes nothing; a new device or a changed token is committed before the 200; a
binding refreshed without a write reaches the store before its copy there lapses
(the sweep) and at a clean stop."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from sipwake.registrar.registrar import store_write_due
from sipwake.store.models import Binding
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id, make_config

TOKEN = "c3" * 32
OTHER = "d4" * 32
ALICE = f"sip:alice@{DOMAIN}"


def apns(token: str) -> str:
    return f";pn-provider=apns;pn-prid={token};pn-param=ABCD123456.com.example.dialer.voip"


class Counting:
    """The server's store, every call counted by method name."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.store, name)
        if not callable(target):
            return target

        def counted(*args: Any, **kw: Any) -> Any:
            self.calls[name] += 1
            return target(*args, **kw)

        return counted


def count_store(running: Running) -> Counting:
    server = running.server
    counting = Counting(server.store)
    server.registrar.store = counting  # type: ignore[assignment]
    server.registrar.writer.store = counting  # type: ignore[assignment]
    server.users.store = counting  # type: ignore[assignment]
    return counting


async def test_a_refresh_that_changes_nothing_costs_the_store_nothing(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    inst = f';+sip.instance="<{instance_id()}>"'
    assert (await phone.register(apns(TOKEN), inst)).status == 200
    registrar = running.server.registrar
    await registrar.writer.flush()
    counting = count_store(running)
    for _ in range(5):
        assert (await phone.register(apns(TOKEN), inst)).status == 200
    await registrar.writer.flush()
    reads_and_writes = {k: n for k, n in counting.calls.items() if k != "last_user_change"
                        and k != "user_changes"}  # fmt: skip
    assert reads_and_writes == {}
    (binding,) = registrar.live_bindings(ALICE)
    (stored,) = await running.server.store.bindings(ALICE)
    assert stored.expires_at < binding.expires_at  # the copy still covers half of it

    # a clean stop writes the refreshes left unwritten
    await registrar.persist()
    (stored,) = await running.server.store.bindings(ALICE)
    assert stored.expires_at == binding.expires_at and stored.cseq == binding.cseq


async def test_a_changed_token_is_committed_before_the_200(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    inst = f';+sip.instance="<{instance_id()}>"'
    assert (await phone.register(apns(TOKEN), inst)).status == 200
    counting = count_store(running)
    assert (await phone.register(apns(OTHER), inst)).status == 200
    # no flush, no wait: the device row was written before the answer left
    (device,) = await running.server.store.devices(ALICE)
    assert device.voip_token == OTHER
    assert counting.calls["put_device"] == 1
    # and its binding (a new contact) is written too
    await running.server.registrar.writer.flush()
    (stored,) = await running.server.store.bindings(ALICE)
    assert OTHER in stored.contact


async def test_a_longer_expiry_or_another_contact_is_written(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    inst = f';+sip.instance="<{instance_id()}>"'
    assert (await phone.register(apns(TOKEN), inst, expires=600)).status == 200
    registrar = running.server.registrar
    await registrar.writer.flush()
    counting = count_store(running)
    # 3600 s asked: the copy (600 s) covers less than half of it
    assert (await phone.register(apns(TOKEN), inst, expires=3600)).status == 200
    await registrar.writer.flush()
    assert counting.calls["write_bindings"] == 1
    (stored,) = await running.server.store.bindings(ALICE)
    assert stored.expires_at > time.time() + 3000


async def test_the_sweep_writes_a_binding_whose_copy_lapses(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    inst = f';+sip.instance="<{instance_id()}>"'
    assert (await phone.register(apns(TOKEN), inst)).status == 200
    registrar = running.server.registrar
    await registrar.writer.flush()
    (binding,) = registrar.live_bindings(ALICE)
    binding.stored_until = time.time() + 10  # as if refreshed unwritten since long
    await registrar.expire()
    (stored,) = await running.server.store.bindings(ALICE)
    assert stored.expires_at == binding.expires_at == binding.stored_until


def test_store_write_due() -> None:
    now = 1_000_000.0
    old = Binding(ALICE, "k", "sip:a@192.0.2.1", now + 500, "c1", 1, updated_at=now - 100,
                  stored_until=now + 500)  # fmt: skip

    def refresh(**changes: Any) -> Binding:
        fields = {"expires_at": now + 600, "call_id": "c2", "cseq": 7, "updated_at": now,
                  **changes}  # fmt: skip
        b = Binding(**{**{k: getattr(old, k) for k in ("aor", "key", "contact")}, **fields})
        return b

    assert not store_write_due(old, refresh())  # 500 s left of 600: covered
    assert store_write_due(old, refresh(expires_at=now + 3600))  # less than half
    assert store_write_due(old, refresh(contact="sip:a@192.0.2.2"))
    assert store_write_due(old, refresh(received="udp:192.0.2.9:5060"))
    assert store_write_due(old, refresh(node="tcp:10.0.0.2:5070"))
    unwritten = Binding(ALICE, "k", "sip:a@192.0.2.1", now + 500, "c1", 1)
    assert store_write_due(unwritten, refresh())  # never written (another node's)


async def test_after_a_restart_the_first_refresh_reads_nothing(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    """Users and devices are read at start, not by each phone's first refresh."""
    first = await start_server(make_config(tmp_path))
    await first.add_user("alice")
    inst = f';+sip.instance="<{instance_id()}>"'
    phone = await first.phone("alice")
    assert (await phone.register(apns(TOKEN), inst)).status == 200
    phone.close()
    first.agents.clear()
    await first.server.stop()
    again = await start_server(make_config(tmp_path))
    counting = count_store(again)
    phone = await again.phone("alice")
    assert (await phone.register(apns(TOKEN), inst)).status == 200
    await again.server.registrar.writer.flush()
    used = {k for k in counting.calls if k not in ("last_user_change", "user_changes")}
    # no get_user, no devices, no put_device; the binding is written (another port)
    assert used == {"write_bindings"}
    first.agents = []
