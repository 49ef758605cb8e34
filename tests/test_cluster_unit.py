"""The cluster's pieces on their own: signed internal routes, liveness, and the
counters that other nodes' events feed (rate limits, the throttle, nonce-counts)."""

from __future__ import annotations

from sipwake.auth.throttle import AuthThrottle
from sipwake.cluster.bus import NODE_TIMEOUT, Bus
from sipwake.cluster.node import park_prefix
from sipwake.cluster.routes import InternalRoutes
from sipwake.ratelimit import RateLimiter
from sipwake.registrar.registrar import reach
from sipwake.sip.digest import AuthResult, DigestAuth, parse_credentials
from sipwake.sip.message import Message
from sipwake.store.models import Binding
from sipwake.testing import ManualScheduler

B = "tcp:127.0.0.1:5070"


def binding() -> Binding:
    return Binding(aor="sip:alice@example.com", key="urn:uuid:1", call_id="c", cseq=1,
                   contact="sip:alice@10.0.0.9:5080;transport=tcp;pn-provider=apns",
                   expires_at=1e12, received="tcp:10.0.0.9:5080", flow="f1", node=B)  # fmt: skip


def invite(route: str) -> Message:
    msg = Message(method="INVITE", uri="sip:alice@10.0.0.9:5080;transport=tcp")
    msg.add("Route", route)
    return msg


def test_another_nodes_binding_is_reached_through_that_node() -> None:
    routes = InternalRoutes(b"secret", "tcp:127.0.0.1:5060")
    target = reach(routes.view(binding()))
    assert str(target.peer) == B and target.peer.flow == ""
    assert target.route[0].startswith("<sip:127.0.0.1:5070;transport=tcp;lr;sw-b=")
    assert "pn-" not in target.request_uri
    # the owner takes its route off and finds the binding it names
    owner = InternalRoutes(b"secret", B)
    msg = invite(target.route[0])
    assert owner.accept(msg) == ("sip:alice@example.com", "urn:uuid:1")
    assert msg.get_all("Route") == []


def test_a_route_not_signed_with_the_secret_is_not_ours() -> None:
    route = InternalRoutes(b"other secret", "n").route_to(binding())
    msg = invite(route)
    assert InternalRoutes(b"secret", B).accept(msg) is None
    assert msg.get_all("Route") == [route]  # left alone: it routes like any other
    forged = route.replace("sw-b=", "sw-b=A")
    assert InternalRoutes(b"other secret", B).accept(invite(forged)) is None


def test_nodes_are_alive_while_heard_and_while_we_cannot_tell() -> None:
    clock = ManualScheduler(100.0)
    bus = Bus("redis://127.0.0.1:1", "c", "me", clock=clock.time)
    assert bus.alive("other")  # off the bus: can't tell, so alive
    bus.connected_at = clock.time()
    clock.advance(NODE_TIMEOUT + 1)
    assert bus.settled() and not bus.alive("other")  # never heard since we're up
    bus.seen["other"] = clock.time()
    assert bus.alive("other") and bus.nodes() == ["me", "other"]
    clock.advance(NODE_TIMEOUT)
    assert not bus.alive("other") and bus.alive("me")


def test_other_nodes_tokens_count_here() -> None:
    limiter = RateLimiter(rate=1 / 60, burst=2, clock=ManualScheduler().time)
    taken: list[str] = []
    limiter.on_take = taken.append
    assert limiter.take("bob|alice") == 0 and taken == ["bob|alice"]
    limiter.consume("bob|alice")  # the other node let one through
    assert limiter.take("bob|alice") > 0


def test_other_nodes_failures_count_here() -> None:
    throttle = AuthThrottle(limit=3, window=60, block=60, clock=ManualScheduler().time)
    told: list[str] = []
    throttle.on_failure = told.append
    throttle.failed("192.0.2.1")
    for _ in range(3):
        throttle.failed("192.0.2.1", elsewhere=True)
    assert told == ["192.0.2.1"]  # the others' failures are not told again
    assert throttle.blocked("192.0.2.1") > 0


def test_a_nonce_count_used_on_another_node_is_a_replay_here() -> None:
    from sipwake.sip.digest import compute_response, ha1

    here = DigestAuth(b"s", "example.com", clock=lambda: 1000.0)
    there = DigestAuth(b"s", "example.com", clock=lambda: 1000.0)
    seen: list[tuple[str, int, int]] = []
    there.on_seen = lambda n, ts, nc: seen.append((n, ts, nc))
    nonce = there.make_nonce()
    key = ha1("alice", "example.com", "pw")
    resp = compute_response("MD5", key, "REGISTER", "sip:example.com", nonce, "00000001", "c")
    creds = parse_credentials(
        f'Digest username="alice", realm="example.com", nonce="{nonce}", '
        f'uri="sip:example.com", response="{resp}", qop=auth, nc=00000001, cnonce="c"'
    )
    assert creds is not None
    assert there.verify(creds, "REGISTER", key) is AuthResult.OK
    (event,) = seen
    here.seen_elsewhere(*event)
    assert here.verify(creds, "REGISTER", key) is AuthResult.REPLAY


def test_park_ids_name_their_node() -> None:
    tag = park_prefix(B)
    assert len(tag) == 6 and tag.isalnum() and tag == park_prefix(B) != park_prefix("x")
