"""Which addresses are ours (Route popping, loop detection, local Request-URIs), and
the To tag on every answer we give as a UAS."""

from __future__ import annotations

from sipwake.sip.transport import Listener, TransportLayer, canonical_host
from tests.helpers.node import DOMAIN, Running


def layer(*listeners: Listener, advertise: str = "") -> TransportLayer:
    t = TransportLayer(lambda msg: None)
    t.listeners.extend(listeners)
    t.advertise = advertise
    return t


def test_hosts_compare_as_addresses_not_as_text() -> None:
    assert canonical_host("[::FFFF:127.0.0.1]") == canonical_host("::ffff:7f00:1")
    assert canonical_host("[0:0:0:0:0:0:0:1]") == "::1"
    assert canonical_host("SIP.Example.COM") == "sip.example.com"
    t = layer(Listener("udp", canonical_host("0:0:0:0:0:0:0:1"), 5060))
    assert t.is_us("[::1]", 5060) and t.is_us("[0::1]", None)
    assert not t.is_us("[::2]", 5060) and not t.is_us("[::1]", 5070)


def test_default_port_is_5061_over_tls_and_the_advertised_host_is_us() -> None:
    t = layer(
        Listener("udp", "198.51.100.7", 5060),
        Listener("tls", "198.51.100.7", 5061),
        advertise=canonical_host("Sip.Example.Net"),
    )
    assert t.is_us("198.51.100.7", None, secure=True)  # sips: or transport=tls, no port
    assert t.is_us("198.51.100.7", None)
    assert t.is_us("sip.example.net", 5061) and t.is_us("SIP.example.net", None)
    assert not t.is_us("sip.example.net", 5062)
    assert t.address("tls") == ("sip.example.net", 5061)


async def test_challenges_and_refusals_carry_a_to_tag(running: Running) -> None:
    await running.add_user("alice")
    phone = await running.phone("alice")
    data, branch = phone.build("REGISTER", f"sip:{DOMAIN}", {"Contact": phone.contact()})
    challenge = await phone._transact(data, branch, 5)
    assert challenge.status == 401 and challenge.to_tag
    data, branch = phone.build("FROB", f"sip:{DOMAIN}")
    refused = await phone._transact(data, branch, 5)
    assert refused.status == 405 and refused.to_tag
    wrong = await running.phone("alice", password="nope")
    bad = await wrong.register()
    assert bad.status == 403 and bad.to_tag
