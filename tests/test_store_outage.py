"""The store failing under a running server (issue 12): PostgreSQL gone for a while, a
full disk. Requests that need it get 503 + Retry-After (never 500), the log gets a line
per kind of failure, not a traceback per request; binding writes wait and are written
when it is back; a delivery whose mark could not be stored is never delivered again."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.agent import Agent
from tests.helpers.api import basic
from tests.helpers.faults import FaultyProxy
from tests.helpers.messaging import Handset
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id
from tests.helpers.wait import wait_for

ALICE = f"sip:alice@{DOMAIN}"
FCM = ";pn-provider=fcm;pn-prid=outage-token-1;pn-param=outage-project"


@pytest.fixture
async def proxy() -> AsyncIterator[FaultyProxy]:
    p = await FaultyProxy(("127.0.0.1", 5432)).start()
    yield p
    await p.close()


def through(url: str, proxy: FaultyProxy) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


async def message(agent: Agent, to: str, text: bytes) -> int:
    resp = await agent.request("MESSAGE", f"sip:{to}@{DOMAIN}", {"Content-Type": "text/plain"},
                               text)  # fmt: skip
    assert resp.status != 503 or resp.get("Retry-After") == "5", resp.get("Retry-After")
    return resp.status


async def test_postgresql_gone_for_a_while(
    start_server: ServerFactory,
    pg_url: str,
    proxy: FaultyProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = await start_server(store={"url": through(pg_url, proxy)})
    for name in ("alice", "bob", "dave"):
        await r.add_user(name)
    alice = await r.phone("alice")
    inst = f';+sip.instance="<{instance_id()}>"'
    assert (await alice.register(FCM, inst)).status == 200
    assert await message(alice, "bob", b"before") == 202  # bob's app sleeps: stored
    await r.server.registrar.writer.flush()
    (before,) = await r.server.store.bindings(ALICE)

    await proxy.cut()
    caplog.clear()
    statuses = [await message(alice, "bob", f"during {i}".encode()) for i in range(20)]
    assert set(statuses) == {503}
    # a refresh needs no store to be answered: memory routes; the write waits
    assert (await alice.register(FCM, inst, expires=1800)).status == 200
    assert r.server.registrar.writer.pending() == 1
    newcomer = await r.phone("dave")  # unknown to the user cache: needs the store
    assert (await newcomer.register()).status == 503
    assert r.server.http is not None
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{r.server.http.port}/v1/devices"
        async with http.get(url, headers=basic("alice")) as got:
            assert got.status == 503 and got.headers["Retry-After"] == "5"
    text = caplog.text
    assert "Traceback" not in text
    outage_lines = [rec for rec in caplog.records if "store" in rec.getMessage()]
    assert 1 <= len(outage_lines) <= 6  # a line per kind of failure, not one per request

    await proxy.restore()
    await r.server.registrar.writer.flush()  # the waiting write went in
    (after,) = await r.server.store.bindings(ALICE)
    assert after.cseq > before.cseq and after.expires_at > before.expires_at + 1000
    assert await message(alice, "bob", b"after") == 202
    bodies = [m.body for m in await r.server.store.messages(f"sip:bob@{DOMAIN}")]
    assert bodies == [b"before", b"after"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> AsyncIterator[Path]:
    """An 8 MiB tmpfs: SQLite meets a full disk for real."""
    where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield where  # type: ignore[misc]
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk`; returns the file to delete to free them."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


async def test_a_full_disk_delivers_nothing_twice(
    start_server: ServerFactory, tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r: Running = await start_server(store={"url": f"sqlite:///{tiny_disk}/sipwake.db"})
    for name in ("alice", "bob"):
        await r.add_user(name)
    bob = await r.phone("bob")
    for i in range(30):
        assert await message(bob, "alice", f"message {i:02d}".encode()) == 202
    filler = fill(tiny_disk)
    caplog.set_level(logging.INFO)
    inst = f';+sip.instance="<{instance_id()}>"'
    alice = await r.phone("alice")
    handset = Handset(alice)
    assert (await alice.register(header_params=inst)).status == 200
    got = list(await handset.wait_for(30))  # delivered; the marks can't be written
    await r.server.inbox.courier.idle()
    assert await message(bob, "alice", b"while full") == 503  # can't be stored: 503
    # a refresh from the same address delivers nothing again
    assert (await alice.register(header_params=inst)).status == 200
    await r.server.inbox.courier.idle()
    filler.unlink()
    # room again: the next registration records the marks and sends only what is new
    assert await message(bob, "alice", b"after") in (200, 202)
    assert (await alice.register(header_params=inst)).status == 200
    await wait_for(lambda: len(handset.got) >= 31)
    await r.server.inbox.courier.idle()
    bodies = [m.body for m in handset.got]
    assert len(bodies) == len(set(bodies)) == 31  # each once, "while full" never stored
    assert bodies[:30] == [m.body for m in got] and bodies[30] == b"after"
    assert await r.server.store.unread_count(ALICE) == 0  # the marks made it in the end
    assert "Traceback" not in caplog.text
    handset.stop()
    await asyncio.sleep(0)
