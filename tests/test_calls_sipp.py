"""Calls with SIPp on both ends, in numbers: nothing may leak.

SIPp's built-in UAC calls alice, whose live binding is a SIPp UAS; another SIPp UAC
calls bob, whose app sleeps, so each call is parked, pushed and times out. Afterwards
parks, dialogs, transactions and timers must all be back to zero."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from pathlib import Path

from sipwake.store.models import Binding
from tests.helpers.calls import FCM, sleeping_ios
from tests.helpers.node import DOMAIN, ServerFactory
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for

SCENARIOS = Path(__file__).parent / "sipp"
PROXIED = int(os.environ.get("SIPWAKE_LEAK_CALLS", "10000"))
PARKED = 300


async def sipp(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    exe = shutil.which("sipp")
    assert exe, "SIPp missing: apt-get install sip-tester"
    return await asyncio.create_subprocess_exec(
        exe, "-i", "127.0.0.1", "-nostdin", "-trace_err", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def test_thousands_of_calls_leave_nothing_behind(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    r = await start_server(
        sip={"trusted_peers": ["127.0.0.1"], "t1": 0.2, "t4": 0.5},
        # a trunk parks 300 calls to one user: no push limit (tests of it are elsewhere)
        calls={"park_timeout": 0.3, "max_parked_per_user": 1000, "source_rate": 0,
               "callee_rate": 0},
    )
    await r.add_user("alice")
    await r.add_user("bob")
    await sleeping_ios(r, "bob", params=FCM)
    uas_port = free_port(socket.SOCK_DGRAM)
    aor = f"sip:alice@{DOMAIN}"
    # alice's phone is a SIPp UAS: its binding, as a REGISTER from there would leave it
    r.server.registrar.bindings[aor] = (
        Binding(aor, "sipp", f"sip:alice@127.0.0.1:{uas_port}", time.time() + 3600,
                "cid", 1, received=f"udp:127.0.0.1:{uas_port}"),
    )  # fmt: skip
    host, port = r.addr("udp")
    uas = await sipp("-sn", "uas", "-p", str(uas_port), cwd=tmp_path)
    try:
        uac = await sipp(
            f"{host}:{port}", "-sn", "uac", "-s", "alice", "-m", str(PROXIED),
            "-r", "200", "-l", "200", "-timeout", "120s", "-timeout_error", cwd=tmp_path,
        )  # fmt: skip
        parked = await sipp(
            f"{host}:{port}", "-sf", str(SCENARIOS / "uac_parked.xml"), "-s", "bob",
            "-m", str(PARKED), "-r", "100", "-timeout", "60s", "-timeout_error", cwd=tmp_path,
        )  # fmt: skip
        out_uac, _ = await uac.communicate()
        out_parked, _ = await parked.communicate()
        errors = "".join(p.read_text()[-1500:] for p in tmp_path.glob("*_errors.log"))
        assert uac.returncode == 0, out_uac.decode()[-1500:] + errors
        assert parked.returncode == 0, out_parked.decode()[-1500:] + errors
    finally:
        uas.kill()
        await uas.wait()

    calls = r.server.calls
    transactions = r.server.transactions
    await wait_for(lambda: not any(calls.counts().values()), timeout=10)
    await wait_for(lambda: not any(transactions.counts().values()), timeout=30)
    await calls.logged()
    (record, *_) = await r.server.store.calls(f"sip:bob@{DOMAIN}", missed_only=True, limit=PARKED)
    assert record.reason == "timeout"
    assert len(await r.server.store.calls(f"sip:bob@{DOMAIN}", limit=10 * PARKED)) == PARKED
    assert len(await r.server.store.calls(aor, limit=2 * PROXIED)) == PROXIED
