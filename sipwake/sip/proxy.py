"""RFC 3261 §16 proxy mechanics, without policy: what every stateful proxy does to a
request it forwards and to the answers it collects. Who to fork to, when to stop
ringing and whom to push is the calls service's business; this is how.

- loose routing: our own Route entries come off the top (§16.4);
- a loop shows as our own Via further down (§16.3);
- a forwarded copy has one Max-Forwards less and no credentials (they were for us);
- Record-Route keeps us in the dialog, twice when the two sides reach us over
  different transports (RFC 5658);
- the best of the failures is the one the caller hears (§16.7.6).
"""

from __future__ import annotations

from collections.abc import Callable

from sipwake.sip.errors import SipParseError
from sipwake.sip.message import Message
from sipwake.sip.peer import Peer
from sipwake.sip.uri import NameAddr

IsUs = Callable[[str, int | None, bool], bool]  # host, port, secure: one of our addresses
LocalAddress = Callable[[str], tuple[str, int]]  # transport → where others reach us on it


def pop_own_routes(req: Message, is_us: IsUs) -> None:
    """Loose routing (§16.4): Route entries naming us are ours to remove."""
    while True:
        top = req.get_all("Route")[:1]
        if not top:
            return
        try:
            uri = NameAddr.parse(top[0]).uri
        except SipParseError:
            return
        if not is_us(uri.host, uri.port, uri.secure):
            return
        req.pop_first("Route")


def looped(req: Message, is_us: IsUs) -> bool:
    """Our own Via further down means this request came back to us (§16.3)."""
    return any(is_us(v.host, v.port, v.transport.upper() == "TLS") for v in req.vias[1:])


def forward_copy(req: Message) -> Message:
    """A request as a proxy forwards it: Max-Forwards one less, and without the
    credentials, which were for us (they never leave the server)."""
    fwd = req.copy()
    mf = req.max_forwards
    fwd.set("Max-Forwards", str((70 if mf is None else mf) - 1))
    fwd.remove("Proxy-Authorization")
    fwd.remove("Authorization")
    return fwd


def record_route(
    msg: Message, inbound: Peer | None, outbound: Peer, local_address: LocalAddress
) -> None:
    """Stay in the dialog's path. Between two transports (a caller on UDP, a phone on
    a WebSocket) each side must reach us over its own: two entries, the callee's on
    top (RFC 5658 double Record-Route)."""
    sides = [outbound]
    if inbound is not None and inbound.transport != outbound.transport:
        sides.append(inbound)
    for peer in reversed(sides):
        host, port = local_address(peer.transport)
        host = f"[{host}]" if ":" in host else host
        msg.add("Record-Route", f"<sip:{host}:{port};transport={peer.transport};lr>", first=True)


_RANK = {6: 0, 3: 1, 4: 2, 5: 3}  # 6xx > redirects > auth challenges and other 4xx > 5xx


def better(new: Message, old: Message) -> bool:
    """Whether `new` beats `old` as the failure the caller hears (§16.7.6-ish)."""
    return _RANK.get(new.status // 100, 9) < _RANK.get(old.status // 100, 9)
