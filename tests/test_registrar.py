"""The registrar end to end: a real server on 127.0.0.1, test phones over UDP and TCP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sipwake.registrar.registrar import FEATURE_CAPS
from sipwake.store.models import Binding, Device
from tests.helpers.node import DOMAIN, Running, ServerFactory, instance_id, make_config
from tests.helpers.wait import wait_for

VOIP_TOKEN = "a1" * 32
ALERT_TOKEN = "b2" * 32
APNS = f";pn-provider=apns;pn-prid={VOIP_TOKEN};pn-param=ABCD123456.com.example.dialer.voip"


async def test_register_challenge_then_ok(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    data, branch = phone.build(
        "REGISTER", f"sip:{DOMAIN}", {"Contact": phone.contact(), "Expires": "600"}
    )
    first = await phone._transact(data, branch, 5)
    assert first.status == 401
    challenges = first.get_all("WWW-Authenticate")
    assert "algorithm=MD5" in challenges[0] and "algorithm=SHA-256" in challenges[1]
    resp = await phone.register()
    assert resp.status == 200
    assert resp.get("Feature-Caps") == FEATURE_CAPS
    (contact,) = resp.get_all("Contact")
    assert f":{phone.local[1]};" in contact and ";expires=" in contact
    assert 590 <= int(contact.rsplit("expires=", 1)[1]) <= 600


async def test_sha256_digest(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    data, branch = phone.build("REGISTER", f"sip:{DOMAIN}", {"Contact": phone.contact()})
    challenge = (await phone._transact(data, branch, 5)).get_all("WWW-Authenticate")[1]
    from tests.helpers.agent import digest_header

    auth = digest_header(challenge, "REGISTER", f"sip:{DOMAIN}", "alice", "secret")
    data, branch = phone.build(
        "REGISTER", f"sip:{DOMAIN}", {"Contact": phone.contact(), "Authorization": auth}
    )
    assert (await phone._transact(data, branch, 5)).status == 200


async def test_wrong_password_unknown_user_and_foreign_aor(running: Running) -> None:
    await running.add_user("alice")
    await running.add_user("bob")
    assert (await (await running.phone("alice", "wrong")).register()).status == 403
    assert (await (await running.phone("mallory")).register()).status == 403
    # alice authenticates but tries to register bob's AOR
    phone = await running.phone("bob")
    phone.auth_user = "alice"
    resp = await phone.register()
    assert resp.status == 403
    assert running.server.registrar.live_bindings(f"sip:bob@{DOMAIN}") == []


async def test_foreign_domain_is_refused(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    resp = await phone.request("REGISTER", "sip:other.org", {"Contact": phone.contact()})
    assert resp.status == 404


async def test_min_expires_423_and_max_clamp(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    resp = await phone.register(expires=10)
    assert resp.status == 423 and resp.get("Min-Expires") == "60"
    resp = await phone.register(expires=999999)
    assert resp.status == 200
    assert int(resp.get_all("Contact")[0].rsplit("expires=", 1)[1]) <= 3600


async def test_star_removes_all_and_needs_expires_zero(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    assert (await phone.register()).status == 200
    assert (await phone.register(params=";x=2")).status == 200
    aor = f"sip:alice@{DOMAIN}"
    assert len(running.server.registrar.live_bindings(aor)) == 2
    bad = await phone.request("REGISTER", f"sip:{DOMAIN}", {"Contact": "*"})
    assert bad.status == 400
    ok = await phone.request("REGISTER", f"sip:{DOMAIN}", {"Contact": "*", "Expires": "0"})
    assert ok.status == 200 and ok.get("Contact") is None
    assert running.server.registrar.live_bindings(aor) == []
    await running.server.registrar.writer.flush()
    assert await running.server.store.bindings(aor) == []


async def test_instance_keys_the_binding(running: Running) -> None:
    """A phone that re-registers from a new port replaces its binding, not adds one."""
    await running.add_user("alice")
    inst = instance_id()
    first = await running.phone("alice")
    await first.register(header_params=f';+sip.instance="<{inst}>"')
    second = await running.phone("alice")
    resp = await second.register(header_params=f';+sip.instance="<{inst}>"')
    assert resp.status == 200
    (binding,) = running.server.registrar.live_bindings(f"sip:alice@{DOMAIN}")
    assert binding.instance == inst and f":{second.local[1]}" in binding.contact


async def test_pn_prid_keys_the_binding_without_instance(running: Running) -> None:
    await running.add_user("alice")
    for _ in range(2):
        phone = await running.phone("alice")
        assert (await phone.register(params=APNS)).status == 200
    assert len(running.server.registrar.live_bindings(f"sip:alice@{DOMAIN}")) == 1


async def test_rfc8599_apns_voip_device_outlives_binding(running: Running) -> None:
    await running.add_user("alice")
    seen: list[tuple[Binding, Device | None]] = []

    class Listener:
        def on_registered(self, binding: Binding, device: Device | None, at: float) -> None:
            seen.append((binding, device))

    running.server.registrar.listeners.append(Listener())
    phone = await running.phone("alice")
    inst = instance_id()
    resp = await phone.register(params=APNS, header_params=f';+sip.instance="<{inst}>"')
    assert resp.status == 200
    aor = f"sip:alice@{DOMAIN}"
    (device,) = await running.server.store.devices(aor)
    assert device.provider == "apns" and device.platform == "ios"
    assert device.voip_token == VOIP_TOKEN and device.push_token == ""
    assert device.topic == "com.example.dialer" and device.team_id == "ABCD123456"
    assert device.instance == inst and device.enabled and not device.sandbox
    assert len(seen) == 1 and seen[0][1] is not None
    assert seen[0][1].device_id == device.device_id == seen[0][0].device_id

    # log out: binding goes, device (and its token) stays
    resp = await phone.register(params=APNS, header_params=f';+sip.instance="<{inst}>"', expires=0)
    assert resp.status == 200
    assert running.server.registrar.live_bindings(aor) == []
    await running.server.registrar.writer.flush()
    assert await running.server.store.bindings(aor) == []
    assert [d.device_id for d in await running.server.store.devices(aor)] == [device.device_id]
    assert len(seen) == 1  # a removal is not a registration


async def test_rfc8599_remote_and_voip_tokens_and_sandbox(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    params = (
        f";pn-provider=apns;pn-prid={ALERT_TOKEN}:remote&{VOIP_TOKEN}:voip"
        ";pn-param=ABCD123456.com.example.dialer.dev.remote&voip"
    )
    assert (await phone.register(params=params)).status == 200
    (device,) = await running.server.store.devices(f"sip:alice@{DOMAIN}")
    assert device.push_token == ALERT_TOKEN and device.voip_token == VOIP_TOKEN
    assert device.sandbox and device.topic == "com.example.dialer"


async def test_rfc8599_fcm_and_errors(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    fcm = ";pn-provider=fcm;pn-prid=dK3x:APA91bH-token_1;pn-param=my-project"
    assert (await phone.register(params=fcm)).status == 200
    (device,) = await running.server.store.devices(f"sip:alice@{DOMAIN}")
    assert device.platform == "android" and device.push_token == "dK3x:APA91bH-token_1"
    assert device.topic == "my-project"

    resp = await phone.register(params=";pn-provider=webpush;pn-prid=x")
    assert resp.status == 555 and resp.get("Feature-Caps") == FEATURE_CAPS
    resp = await phone.register(params=";pn-provider=apns;pn-prid=zz;pn-param=bad")
    assert resp.status == 400
    resp = await phone.register(params=";pn-prid=abc")
    assert resp.status == 400


async def test_new_token_reenables_a_disabled_device(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    assert (await phone.register(params=APNS)).status == 200
    store = running.server.store
    (device,) = await store.devices(f"sip:alice@{DOMAIN}")
    assert await store.disable_device(device.device_id, "Unregistered", device.token_updated_at)
    running.server.registrar.devices.clear()
    # same token again: stays disabled (the provider said it is dead)
    assert (await phone.register(params=APNS)).status == 200
    assert not (await store.get_device(device.device_id)).enabled  # type: ignore[union-attr]
    new = APNS.replace(VOIP_TOKEN, "c3" * 32)
    inst = ""  # same device identity: no instance, so identity follows the token
    del inst
    phone2 = await running.phone("alice")
    assert (await phone2.register(params=new)).status == 200
    enabled = [d for d in await store.devices(f"sip:alice@{DOMAIN}") if d.enabled]
    assert [d.voip_token for d in enabled] == ["c3" * 32]


async def test_tcp_flow_close_removes_binding_keeps_device(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice", transport="tcp")
    assert (await phone.register(params=APNS)).status == 200
    aor = f"sip:alice@{DOMAIN}"
    (binding,) = running.server.registrar.live_bindings(aor)
    assert binding.flow.startswith("tcp-")
    phone.close()
    # the server notices the FIN on its own schedule
    await wait_for(lambda: not running.server.registrar.bindings.get(aor))
    assert running.server.registrar.live_bindings(aor) == []
    assert len(await running.server.store.devices(aor)) == 1


async def test_a_dropped_connection_takes_only_its_own_bindings(running: Running) -> None:
    await running.add_user("alice")
    await running.add_user("bob")
    registrar = running.server.registrar
    alice, bob = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
    first = await running.phone("alice", transport="tcp")
    second = await running.phone("alice", transport="tcp")  # e.g. a tablet
    other = await running.phone("bob", transport="tcp")
    for phone in (first, second, other):
        assert (await phone.register()).status == 200
    assert len(registrar.live_bindings(alice)) == 2
    first.close()
    await wait_for(lambda: len(registrar.live_bindings(alice)) == 1)
    (left,) = registrar.live_bindings(alice)
    assert f":{second.local[1]}" in left.contact  # the tablet's binding stays
    second.close()
    await wait_for(lambda: not registrar.bindings.get(alice))
    (bobs,) = registrar.live_bindings(bob)
    assert list(registrar._by_flow) == [bobs.flow]  # nothing left behind for closed flows


async def test_bindings_survive_restart(tmp_path: Path, start_server: ServerFactory) -> None:
    cfg = make_config(tmp_path)
    first = await start_server(cfg)
    await first.add_user("alice")
    phone = await first.phone("alice")
    assert (await phone.register(params=APNS)).status == 200
    phone.close()
    first.agents.clear()
    await first.server.stop()
    again = await start_server(make_config(tmp_path))
    (binding,) = again.server.registrar.live_bindings(f"sip:alice@{DOMAIN}")
    assert binding.contact.startswith("sip:alice@127.0.0.1")
    first.agents = []


async def test_registrar_on_postgresql(start_server: ServerFactory, pg_url: str) -> None:
    r = await start_server(store={"url": pg_url})
    await r.add_user("alice")
    phone = await r.phone("alice", transport="tcp")
    assert (await phone.register(params=APNS)).status == 200
    await r.server.registrar.writer.flush()  # bindings are written behind the 200
    assert len(await r.server.store.bindings(f"sip:alice@{DOMAIN}")) == 1
    assert len(await r.server.store.devices(f"sip:alice@{DOMAIN}")) == 1


async def test_options_keepalive(running: Running) -> None:
    phone = await running.phone("anyone")
    resp = await phone.request("OPTIONS", f"sip:{DOMAIN}")
    assert resp.status == 200 and "REGISTER" in (resp.get("Allow") or "")


async def test_unknown_method_405(running: Running) -> None:
    phone = await running.phone("anyone")
    resp = await phone.request("FOOBAR", f"sip:{DOMAIN}")
    assert resp.status == 405 and resp.get("Allow")


async def test_malformed_gets_400_and_server_lives(running: Running) -> None:
    phone = await running.phone("alice")
    # a bad header, but Via and friends readable: a 400 comes back
    data, branch = phone.build("OPTIONS", f"sip:{DOMAIN}")
    data = data.replace(b"Max-Forwards: 70", b"Max-Forwards: many")
    q: asyncio.Queue = asyncio.Queue()
    phone._pending[branch] = q
    phone.send_raw(data)
    async with asyncio.timeout(5):
        resp = await q.get()
    assert resp.status == 400
    phone.send_raw(b"\x00\xffgarbage\r\n\r\n")
    bad_cseq, _ = phone.build("OPTIONS", f"sip:{DOMAIN}")
    phone.send_raw(bad_cseq.replace(b"CSeq: 2", b"CSeq: x"))
    assert (await phone.request("OPTIONS", f"sip:{DOMAIN}")).status == 200
    assert running.server.transport.parse_errors == 2
    assert (await phone.request("OPTIONS", f"sip:{DOMAIN}")).status == 200


async def test_oversize_tcp_message_413_without_buffering(running: Running) -> None:
    phone = await running.phone("alice", transport="tcp")
    big = b"x" * 200_000
    data, branch = phone.build("MESSAGE", f"sip:alice@{DOMAIN}", {"Content-Type": "text/plain"})
    data = data.replace(b"Content-Length: 0", f"Content-Length: {len(big)}".encode())
    q: asyncio.Queue = asyncio.Queue()
    phone._pending[branch] = q
    phone.send_raw(data + big)
    async with asyncio.timeout(5):
        resp = await q.get()
    assert resp.status == 413
    # the connection survived: the body was skipped, not buffered
    assert (await phone.request("OPTIONS", f"sip:{DOMAIN}")).status == 200
    conns = list(running.server.transport._flows.values())
    assert all(len(c.buffer) < 70_000 for c in conns)


async def test_provider_refusal_is_not_undone_by_a_refresh(running: Running) -> None:
    """A token the provider refused stays disabled when the same token registers again,
    even with other fields changed (the registrar's cache must not write 'enabled' back)."""
    await running.add_user("alice")
    phone = await running.phone("alice")
    assert (await phone.register(params=APNS)).status == 200
    (device,) = await running.server.store.devices(f"sip:alice@{DOMAIN}")
    assert await running.server.registrar.disable_device(  # as the push service does
        device.device_id, "BadDeviceToken", device.token_updated_at
    )
    other_bundle = APNS.replace("com.example.dialer", "com.example.other")
    assert (await phone.register(params=other_bundle)).status == 200
    (again,) = await running.server.store.devices(f"sip:alice@{DOMAIN}")
    assert again.topic == "com.example.other" and not again.enabled


async def test_expiry_sweep_takes_turns_and_sees_refreshes(running: Running) -> None:
    registrar = running.server.registrar
    now = time.time()

    def binding(i: int, expires_at: float) -> Binding:
        aor = f"sip:u{i}@{DOMAIN}"
        return Binding(aor, "k", f"sip:u{i}@192.0.2.1", expires_at, "c", 1)

    for i in range(5000):  # odd ones expired
        b = binding(i, now - 1 if i % 2 else now + 600)
        registrar.bindings[b.aor] = (b,)
    sweep = asyncio.ensure_future(registrar.expire())
    await asyncio.sleep(0)  # the sweep did one slice and let the loop turn
    assert not sweep.done()
    refreshed = binding(4999, now + 600)  # a REGISTER meanwhile, after its slice
    registrar.bindings[refreshed.aor] = (refreshed,)
    assert await sweep == 2499
    assert len(registrar.bindings) == 2501 and refreshed.aor in registrar.bindings


async def test_register_at_our_address_and_every_answer_tagged(running: Running) -> None:
    """pjsua2 registers at sip:<server IP>; a registrar, as a UAS, tags the To of every
    answer (RFC 3261 §8.2.6.2)."""
    await running.add_user("alice")
    phone = await running.phone("alice")
    host, port = running.addr("udp")
    resp = await phone.request(
        "REGISTER", f"sip:{host}:{port}",
        {"Contact": phone.contact(), "Expires": "600"},
    )  # fmt: skip
    assert resp.status == 200 and resp.to_tag
    assert len(running.server.registrar.live_bindings(f"sip:alice@{DOMAIN}")) == 1
    resp = await phone.register(expires=5)
    assert resp.status == 423 and resp.to_tag
    resp = await phone.request("REGISTER", "sip:elsewhere.example", {"Contact": phone.contact()})
    assert resp.status == 404 and resp.to_tag
    resp = await phone.request("REGISTER", f"sip:{host}:{port + 1}", {"Contact": phone.contact()})
    assert resp.status == 404  # another port is not us


async def test_one_algorithm_configured_one_challenge(start_server: ServerFactory) -> None:
    r = await start_server(sip={"digest_algorithms": ["SHA-256"]})
    await r.add_user("alice")
    phone = await r.phone("alice")
    data, branch = phone.build("REGISTER", f"sip:{DOMAIN}", {"Contact": phone.contact()})
    (challenge,) = (await phone._transact(data, branch, 5)).get_all("WWW-Authenticate")
    assert "algorithm=SHA-256" in challenge
    assert (await phone.register()).status == 200


async def test_a_user_has_at_most_max_bindings_contacts(running: Running) -> None:
    """Memory and the per-user scans are bounded: the contact past MAX_BINDINGS is
    refused 403; one that leaves makes room again."""
    from sipwake.registrar.registrar import MAX_BINDINGS

    await running.add_user("alice")
    phone = await running.phone("alice")
    for i in range(MAX_BINDINGS):
        assert (await phone.register(params=f";line={i}")).status == 200
    refused = await phone.register(params=";line=extra")
    assert refused.status == 403 and "Too Many Contacts" in refused.reason
    aor = f"sip:alice@{DOMAIN}"
    assert len(running.server.registrar.live_bindings(aor)) == MAX_BINDINGS
    assert (await phone.register(params=";line=0")).status == 200  # a refresh still goes
    assert (await phone.register(params=";line=0", expires=0)).status == 200
    assert (await phone.register(params=";line=extra")).status == 200
