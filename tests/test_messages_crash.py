"""kill -9 during a burst: every MESSAGE that got a 2xx is stored exactly once, the
resent rest is collapsed by IMDN Message-ID, and delivery resumes on REGISTER."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from sipwake.sip.digest import ha1
from sipwake.store import open_store
from sipwake.store.models import InboxMessage, User
from tests.helpers.agent import Agent
from tests.helpers.message_load import MessageLoad
from tests.helpers.messaging import BOB, Handset, cpim
from tests.helpers.node import DOMAIN, instance_id
from tests.helpers.ports import free_port

BURST = 1000
KILL_AFTER = 300  # 2xx answers seen before the SIGKILL


async def serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sipwake.cli", "serve", "--config", str(config),
            stdout=out, stderr=out, env=dict(os.environ),
        )  # fmt: skip


async def until_answering(port: int, proc: asyncio.subprocess.Process) -> None:
    probe = await Agent("probe", "", DOMAIN, ("127.0.0.1", port)).start()
    try:
        async with asyncio.timeout(20):
            while True:
                assert proc.returncode is None, "the server died at start-up"
                try:
                    if (await probe.request("OPTIONS", f"sip:{DOMAIN}", timeout=0.2)).status:
                        return
                except TimeoutError:
                    continue
    finally:
        probe.close()


async def stored(url: str) -> list[InboxMessage]:
    store = await open_store(url)
    try:
        return await store.messages(BOB, 0, 10 * BURST)
    finally:
        await store.close()


async def test_sigkill_mid_burst_loses_nothing_acknowledged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/crash.db"
    store = await open_store(url)
    await store.put_user(User("bob", DOMAIN, ha1("bob", DOMAIN, "secret"),
                              ha1("bob", DOMAIN, "secret", "SHA-256")))
    await store.close()
    sip_port = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "sipwake.toml"
    config.write_text(
        f'[sip]\ndomain = "{DOMAIN}"\nlisten = ["udp:127.0.0.1:{sip_port}"]\n'
        'trusted_peers = ["127.0.0.1"]\nsecret = "crash"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port(socket.SOCK_STREAM)}"\n'
        f'[store]\nurl = "{url}"\n[messages]\nsender_rate = 0.0\n[log]\nlevel = "WARNING"\n'
    )
    log = tmp_path / "server.log"
    items = [(f"id-{i:04d}", cpim(f"burst message {i} ✓", f"id-{i:04d}"), "message/cpim")
             for i in range(BURST)]
    bodies = {key: body for key, body, _ in items}

    server = await serve(config, log)
    try:
        await until_answering(sip_port, server)
        acked: list[str] = []

        def on_final(key: str, status: int) -> None:
            if 200 <= status < 300:
                acked.append(key)
                if len(acked) == KILL_AFTER:
                    server.send_signal(signal.SIGKILL)  # mid-burst, requests in flight
                    load.stop()

        load = await MessageLoad(("127.0.0.1", sip_port), DOMAIN, window=50,
                                 on_final=on_final).start()
        async with asyncio.timeout(30):
            await load.run("bob", items)
            assert await server.wait() == -signal.SIGKILL
        load.close()
        assert KILL_AFTER <= len(acked) < BURST

        # Every acknowledged message is there, once, byte for byte.
        after_crash = await stored(url)
        ids = [m.imdn_id for m in after_crash]
        assert len(ids) == len(set(ids))
        assert set(acked) <= set(ids)
        assert all(m.body == bodies[m.imdn_id] for m in after_crash)

        # After a restart the sender resends what it got no answer for: whatever had
        # been stored already is recognized by its IMDN Message-ID.
        server = await serve(config, log)
        await until_answering(sip_port, server)
        resend = [item for item in items if item[0] not in set(acked)]
        load = await MessageLoad(("127.0.0.1", sip_port), DOMAIN, window=50).start()
        async with asyncio.timeout(30):
            await load.run("bob", resend)
        load.close()
        assert all(status == 202 for status in load.finals.values()), load.finals
        final = await stored(url)
        assert sorted(m.imdn_id for m in final) == sorted(bodies)  # exactly once each

        # Delivery resumes when the app registers: all of them, in the stored order.
        phone = await Agent("bob", "secret", DOMAIN, ("127.0.0.1", sip_port)).start()
        handset = Handset(phone)
        try:
            resp = await phone.register(header_params=f';+sip.instance="<{instance_id()}>"')
            assert resp.status == 200
            got = await handset.wait_for(BURST, timeout=60)
            assert [m.body for m in got] == [m.body for m in final]
        finally:
            handset.stop()
            phone.close()
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                async with asyncio.timeout(10):
                    await server.wait()
            except TimeoutError:
                server.kill()
                await server.wait()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
