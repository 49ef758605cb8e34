"""The registrar: REGISTER → bindings and push devices (RFC 3261 §10, RFC 8599, RFC 5626).

Bindings live in memory (the routing hot path) and are written to the store right
behind the 200 OK (writer.py), so they survive a restart. Devices are their own records: a binding
goes away with Expires: 0, expiry or a dropped connection; the device and its push
token stay, so the user keeps getting pushes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from sipwake.auth.admission import Admission
from sipwake.registrar.pn import (
    PushParamError,
    PushParams,
    UnsupportedProvider,
    parse_push_params,
    strip_push_params,
)
from sipwake.registrar.writer import BindingWriter
from sipwake.sip import proxy
from sipwake.sip.message import Message, make_response
from sipwake.sip.peer import Peer
from sipwake.sip.transaction import new_tag
from sipwake.sip.uri import URI, NameAddr
from sipwake.store.base import Store
from sipwake.store.models import Binding, Device, User

log = logging.getLogger("sipwake.registrar")

FEATURE_CAPS = '*;+sip.pns="apns";+sip.pns="fcm"'


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    domain: str
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600


# Every device write in this process drops the entry at once; the TTL only bounds how
# long a `sipwake user del` run elsewhere goes unseen (its user is refused within a
# second, auth/users.py, so no call reaches those devices meanwhile).
DEVICE_CACHE_TTL = 300.0
EXPIRE_SLICE = 2_000  # AORs swept between two turns of the event loop
# a binding whose copy in the store lapses within this is written by the sweep before
# (server.py sweeps every 30 s)
LAPSE_AHEAD = 90.0
# what a refresh must leave as it was for the store's copy to do
_STORED = ("contact", "received", "flow", "path", "node", "device_id", "instance", "q",
           "user_agent")  # fmt: skip
DEVICE_CACHE_MAX = 100_000
MAX_BINDINGS = 32  # contacts one user may have registered at once
DEVICES_MAX = 2_000_000  # devices held by id (read at start, written through)


class RegistrationListener(Protocol):
    """Later flows (parked calls, inbox) react to a device completing a REGISTER;
    `received_at` is when the REGISTER came in (perf_counter, for latency metrics)."""

    def on_registered(self, binding: Binding, device: Device | None, received_at: float) -> None:
        ...


class Peers(Protocol):
    """The other nodes of a cluster, as the registrar sees them (sipwake.cluster)."""

    node: str  # this node's internal address: what its bindings record

    def alive(self, node: str) -> bool: ...

    def view(self, binding: Binding) -> Binding: ...  # another node's binding, from here

    def registered(self, binding: Binding, device: Device | None) -> None: ...

    def removed(self, binding: Binding) -> None: ...

    def devices_changed(self, aor: str | None, device_id: str) -> None: ...


class RegistrarMetrics(Protocol):
    """Where the registrar reports what it did (metrics.py's Metrics is one)."""

    def registration(self, result: str) -> None:
        """A REGISTER was answered: `result` is a word for its status (RESULTS)."""

    def binding_change(self, change: str) -> None:
        """A binding of this node's came (new), was refreshed, or went (unregistered,
        expired, flow_closed)."""


class _NoMetrics:
    def registration(self, result: str) -> None:
        pass

    def binding_change(self, change: str) -> None:
        pass


# A REGISTER's answer as a metric label: a short word, and few of them
RESULTS = {
    200: "ok", 401: "challenged", 407: "challenged", 403: "forbidden", 404: "not_found",
    400: "bad_request", 423: "interval_too_brief", 555: "push_not_supported",
    500: "error", 503: "unavailable",
}  # fmt: skip


class Registrar:
    def __init__(
        self,
        settings: RegistrarSettings,
        store: Store,
        auth: Admission,
        clock: Callable[[], float] = time.time,
        peers: Peers | None = None,
        metrics: RegistrarMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.auth = auth
        self.clock = clock
        self.peers = peers  # None: a node alone
        self.node = peers.node if peers is not None else ""
        self.metrics: RegistrarMetrics = metrics or _NoMetrics()
        # aor → its bindings, a tuple (one or two for most users: a dict each cost
        # 184 bytes a user at 100k devices; MAX_BINDINGS bounds the scans)
        self.bindings: dict[str, tuple[Binding, ...]] = {}
        # how many of `bindings` are this node's own (registered here), kept as they
        # come and go: the gauge reads it, where a sum over a million users per scrape
        # would stall calls, and a cluster's nodes add up to its total
        self.binding_count = 0
        self.writer = BindingWriter(store)
        # TCP/TLS connection id → its bindings: a dropped connection costs its own
        # bindings, not a scan of everyone's
        self._by_flow: dict[str, set[tuple[str, str]]] = {}
        self.devices: dict[str, Device] = {}  # device_id → device (write-through cache)
        # aor → (read at, its devices): calls, inbox and voicemail read it per event
        self._by_aor: dict[str, tuple[float, list[Device]]] = {}
        self._writes = 0  # bumped on every device change: a read racing one isn't cached
        # id derived from a REGISTER → id of the device it joined (uploaded over HTTP first)
        self._joined: dict[str, str] = {}
        self.listeners: list[RegistrationListener] = []
        self.flow_alive: Callable[[str], bool] = lambda flow: True

    async def load(self) -> None:
        """Read back the bindings that were live when the server stopped (and, in a
        cluster, every other node's)."""
        now = self.clock()
        # the devices too, so that a phone's first refresh after a restart reads nothing
        for d in await self.store.some_devices(DEVICES_MAX):
            self._hold(d)
        await self.store.purge_expired_bindings(now)
        for b in await self.store.all_bindings():
            if self._remote(b):
                self._keep(self._view(b))
            elif not b.flow:  # a connection of ours died with the old process
                self._put(b)
                self.binding_count += 1

    # ------------------------------------------------------------ the cluster
    def _remote(self, binding: Binding) -> bool:
        return bool(binding.node) and binding.node != self.node

    def _view(self, binding: Binding) -> Binding:
        return self.peers.view(binding) if self.peers is not None else binding

    def remote_registered(self, binding: Binding) -> Binding:
        """Another node took a REGISTER: its binding, as reached from here."""
        view = self._view(binding)
        if view.expires_at <= self.clock():
            self._forget(view.aor, view.key)
        else:
            self._keep(view)
        return view

    def remote_removed(self, aor: str, key: str, node: str) -> None:
        """Another node's binding went (unregistered, its connection closed)."""
        b = self.binding(aor, key)
        if b is not None and b.node == node:  # not one registered here since
            self._forget(aor, key)

    def remote_devices_changed(self, aor: str | None, device_id: str = "") -> None:
        """Another node wrote a device (`device_id`; "" and no aor: maybe any)."""
        if device_id:
            self.devices.pop(device_id, None)
        elif aor is None:
            self.devices.clear()
        self._device_changed(aor, announce=False)

    async def resync(self) -> None:
        """Back on the cluster bus: what other nodes registered meanwhile, from the store
        (the events in between are lost)."""
        seen: set[tuple[str, str]] = set()
        for b in await self.store.all_bindings():
            if self._remote(b):
                seen.add((b.aor, b.key))
                mine = self.binding(b.aor, b.key)
                if mine is None or mine.node != self.node or mine.updated_at < b.updated_at:
                    self._keep(self._view(b))
        for aor, bindings in list(self.bindings.items()):
            for b in bindings:
                if self._remote(b) and (aor, b.key) not in seen:
                    self._forget(aor, b.key)
        self.remote_devices_changed(None)
        log.info("cluster: %d bindings of other nodes read back from the store", len(seen))

    def local_binding(self, aor: str, key: str) -> Binding | None:
        """A live binding of this node's (a request another node routes through us)."""
        b = self.binding(aor, key)
        if b is None or self._remote(b) or b.expires_at <= self.clock():
            return None
        return b if not b.flow or self.flow_alive(b.flow) else None

    # ------------------------------------------------------------------ queries
    def flow_has_binding(self, flow: str) -> bool:
        """Some registration lives on this TCP/TLS/WS connection."""
        return flow in self._by_flow

    def live_bindings(self, aor: str) -> list[Binding]:
        """Bindings that can be reached now: unexpired, and their connection still open."""
        now = self.clock()
        return [
            b
            for b in self.bindings.get(aor, ())
            if b.expires_at > now
            and (not b.flow or self.flow_alive(b.flow))
            and (not b.node or self.peers is None or self.peers.alive(b.node))
        ]

    async def devices_of(self, aor: str) -> list[Device]:
        """The user's push devices, through a short-lived cache. This process writes
        them all and drops the entry; the TTL covers `sipwake user del` elsewhere."""
        now = time.monotonic()
        hit = self._by_aor.get(aor)
        if hit is not None and now - hit[0] < DEVICE_CACHE_TTL:
            return list(hit[1])
        writes = self._writes
        devices = await self.store.devices(aor)
        if writes == self._writes:
            if len(self._by_aor) >= DEVICE_CACHE_MAX:
                self._by_aor.clear()
            self._by_aor[aor] = (now, devices)
        return list(devices)

    def _device_changed(
        self, aor: str | None, device_id: str = "", announce: bool = True
    ) -> None:
        if announce and self.peers is not None:
            self.peers.devices_changed(aor, device_id)
        self._writes += 1
        if aor is None:
            self._by_aor.clear()
        else:
            self._by_aor.pop(aor, None)

    # ---------------------------------------------------- devices, one owner
    async def delete_device(self, device_id: str) -> bool:
        """The owner deletes it (HTTP API): gone from the store and the cache."""
        gone = await self.store.delete_device(device_id)
        self.device_deleted(device_id)
        return gone

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool:
        """The provider refused its token: disabled, unless the token was uploaded
        after `token_at` (APNs' 410 rule); it also leaves the cache, so a later
        REGISTER can't write the stale "enabled" back."""
        disabled = await self.store.disable_device(device_id, reason, token_at)
        if disabled:
            self.device_deleted(device_id)
        return disabled

    # ------------------------------------------------------------ device cache
    def device_saved(self, device: Device) -> None:
        """`device` was stored: refresh the cache."""
        before = self.devices.get(device.device_id)
        self._hold(device)
        if before is not None and before.aor != device.aor:  # it left that user
            self._device_changed(before.aor, device.device_id)
        self._device_changed(device.aor, device.device_id)

    def _hold(self, device: Device) -> None:
        if len(self.devices) >= DEVICES_MAX and device.device_id not in self.devices:
            del self.devices[next(iter(self.devices))]  # bounded: the oldest is read again
        self.devices[device.device_id] = device

    def device_deleted(self, device_id: str) -> None:
        """A device was deleted: forget it, so a REGISTER recreates it."""
        gone = self.devices.pop(device_id, None)
        self._device_changed(gone.aor if gone is not None else None, device_id)
        for derived in [k for k, v in self._joined.items() if v == device_id]:
            del self._joined[derived]

    # ----------------------------------------------------------------- REGISTER
    async def handle_register(self, request: Message, respond: Callable[[Message], None]) -> None:
        """Process one REGISTER: send the final response, then tell the listeners."""
        registered: list[tuple[Binding, Device | None]] = []
        try:
            response = await self._register(request, registered)
        except Exception:
            self.metrics.registration("error")
            raise
        self.metrics.registration(RESULTS.get(response.status, "other"))
        respond(response)
        for binding, device in registered:
            if self.peers is not None:
                self.peers.registered(binding, device)
            for listener in self.listeners:
                try:
                    listener.on_registered(binding, device, request.received_at)
                except Exception:
                    log.exception("registration listener failed")

    async def _register(
        self, request: Message, registered: list[tuple[Binding, Device | None]]
    ) -> Message:
        s = self.settings
        ruri = request.request_uri
        # our domain, or one of our addresses (pjsua2 registers at sip:<our IP>)
        if not self.auth.is_local(ruri):
            return _answer(request, 404, "Not Found (not our domain)")
        to_uri = request.to.uri
        if not self.auth.is_local(to_uri) or not to_uri.user:
            return _answer(request, 404, "Not Found (not our domain)")
        checked = await self.auth.authenticate(request)
        if isinstance(checked, Message):
            return checked
        user: User = checked
        if user.username != to_uri.user:
            return _answer(request, 403, "Forbidden (cannot register another user)")
        aor = user.aor
        contacts = request.contacts
        header_expires = request.int_header("Expires")

        if any(c.star for c in contacts):
            if len(contacts) != 1 or header_expires != 0:
                return _answer(request, 400, "Bad Request (Contact: * needs Expires: 0)")
            self._remove_all(aor, request)
            return self._ok(request, aor)

        changes: list[tuple[Binding, PushParams | None]] = []
        for contact in contacts:
            expires = _contact_expires(contact, header_expires, s.default_expires)
            if 0 < expires < s.min_expires:
                resp = _answer(request, 423)
                resp.add("Min-Expires", str(s.min_expires))
                return resp
            try:
                push = parse_push_params(contact.uri.params)
            except UnsupportedProvider as unsupported:  # (one name per clause: mypyc)
                resp = _answer(request, 555)
                resp.add("Feature-Caps", FEATURE_CAPS)
                log.info("REGISTER %s: unsupported pn-provider %r", aor, str(unsupported))
                return resp
            except PushParamError as bad:
                return _answer(request, 400, f"Bad Request ({bad})")
            binding = self._binding(request, aor, contact, min(expires, s.max_expires), push)
            changes.append((binding, push))

        for binding, _ in changes:
            old = self.binding(aor, binding.key)
            if old is not None and old.call_id == binding.call_id and old.cseq >= binding.cseq:
                return _answer(request, 500, "Server Internal Error (CSeq out of order)")
        if len(self.bindings.get(aor, ())) + len(changes) > MAX_BINDINGS:
            now = self.clock()
            kept = {b.key for b in self.bindings.get(aor, ()) if b.expires_at > now}
            kept.update(b.key for b, _ in changes if b.expires_at > now)
            kept.difference_update(b.key for b, _ in changes if b.expires_at <= now)
            if len(kept) > MAX_BINDINGS:  # a user's memory and scans are bounded
                return _answer(request, 403, "Forbidden (Too Many Contacts)")

        for binding, push in changes:
            device = await self._save_device(aor, binding, push) if push else None
            if device is not None:
                binding.device_id = device.device_id
            if binding.expires_at <= self.clock():
                self._remove(aor, binding.key)
            else:
                self._store(self.binding(aor, binding.key), binding)
                self._keep(binding)
                registered.append((binding, device))
        resp = self._ok(request, aor)
        # RFC 5626: an outbound-capable registration gets Require: outbound
        if any("reg-id" in c.params for c in contacts) and "outbound" in request.get_all(
            "Supported"
        ):
            resp.add("Require", "outbound")
        return resp

    def _binding(
        self,
        request: Message,
        aor: str,
        contact: NameAddr,
        expires: int,
        push: PushParams | None,
    ) -> Binding:
        now = self.clock()
        instance = (contact.params.get("+sip.instance") or "").strip('"').strip("<>")
        key = instance or (push.raw_prid if push else "") or str(contact.uri)
        source: Peer | None = request.source
        q_text = contact.params.get("q") or "1"
        try:
            q = min(1.0, max(0.0, float(q_text)))
        except ValueError:
            q = 1.0
        return Binding(
            aor=aor,
            key=key,
            contact=str(contact.uri),
            expires_at=now + expires,
            call_id=request.call_id,
            cseq=request.cseq[0],
            q=q,
            received=str(source) if source else "",
            flow=source.flow if source is not None else "",
            instance=instance,
            # few distinct values across devices: one copy each
            user_agent=sys.intern(request.get("User-Agent") or ""),
            path=tuple(request.get_all("Path")),
            updated_at=now,
            node=self.node,
        )

    async def _save_device(self, aor: str, binding: Binding, push: PushParams) -> Device:
        """Create or refresh the device record; a new token re-enables the device."""
        ident = binding.instance or f"{push.provider}:{push.push_token or push.voip_token}"
        derived = hashlib.sha256(f"{aor}|{ident}".encode()).hexdigest()[:24]
        device_id = self._joined.get(derived, derived)
        old = self.devices.get(device_id)
        if old is not None and old.aor != aor:
            old = None  # an id squatted by another user: this registration wins it back
        if old is None:
            # one read finds our own record, or one the app uploaded over HTTP for this
            # installation
            mine = await self.devices_of(aor)
            old = next((d for d in mine if d.device_id == device_id), None)
            if old is None:
                old = _uploaded_device(mine, binding.instance, push)
                if old is not None:
                    device_id = self._joined[derived] = old.device_id
        now = self.clock()
        # A VoIP-only REGISTER keeps an alert token uploaded over HTTP (DESIGN.md).
        push_token = push.push_token or (old.push_token if old and push.voip_token else "")
        new_token = old is None or (
            old.push_token != push_token or old.voip_token != push.voip_token
        )
        intern = sys.intern  # an app's values, the same for all of its devices
        fields = {
            "provider": push.provider,
            "platform": push.platform,
            "topic": intern(push.topic),
            "team_id": intern(push.team_id),
            "pn_param": intern(push.raw_param),
            "instance": binding.instance,
            "sandbox": push.sandbox,
        }
        if old is None:
            device = Device(
                device_id=device_id,
                aor=aor,
                push_token=push_token,
                voip_token=push.voip_token,
                call_mode="voip" if push.voip_token else "alert",
                token_updated_at=now,
                created_at=now,
                updated_at=now,
                **fields,  # type: ignore[arg-type]
            )
        elif new_token or any(getattr(old, k) != v for k, v in fields.items()):
            device = replace(old, **fields)  # type: ignore[arg-type]
            device.push_token = push_token
            device.voip_token = push.voip_token
            device.updated_at = now
            if new_token:
                device.token_updated_at = now
                device.enabled = True
                device.disabled_reason = ""
        else:
            self._hold(old)
            return old  # unchanged: no write on a plain refresh
        await self.save_device(device)
        what = "added" if old is None else "token changed" if new_token else "updated"
        log.info("device %s: %s of %s, %s %s", what, device_id, aor, device.platform,
                 push.provider, extra=_device_fields(device))  # fmt: skip
        return device

    async def save_device(self, device: Device) -> None:
        """Store a new or changed device (from a REGISTER or the HTTP API). A token it
        holds moves here from any other device, of this user or another: one token is
        one device, so one event never pushes it twice. A device left without a token
        is deleted."""
        tokens = {t for t in (device.push_token, device.voip_token) if t}
        for token in tokens:
            for other in await self.store.devices_with_token(token):
                if other.device_id != device.device_id:
                    await self._lose_tokens(other, tokens, device)
        await self.store.put_device(device)
        self.device_saved(device)

    async def _lose_tokens(self, device: Device, tokens: set[str], taker: Device) -> None:
        left = replace(device)
        left.push_token = "" if device.push_token in tokens else device.push_token
        left.voip_token = "" if device.voip_token in tokens else device.voip_token
        log.info("device token moved: from %s (%s) to device %s (%s)",
                 device.device_id, device.aor, taker.device_id, taker.aor,
                 extra={**_device_fields(taker), "from_device": device.device_id,
                        "from_user": device.aor})  # fmt: skip
        if left.push_token or left.voip_token:
            left.updated_at = taker.updated_at
            await self.store.put_device(left)
            self.device_saved(left)
        else:
            await self.store.delete_device(device.device_id)
            self.device_deleted(device.device_id)

    def _store(self, old: Binding | None, binding: Binding) -> None:
        """Queue `binding` for the store, unless the copy there will do (a refresh)."""
        if old is None or store_write_due(old, binding):
            binding.stored_until = binding.expires_at
            self.writer.put(binding)
        else:
            binding.stored_until = old.stored_until

    def _rewrite_lapsing(self, binding: Binding, before: float, now: float) -> None:
        """Write a live binding of ours whose copy in the store lapses before `before`
        (its phone refreshed it without a write)."""
        b = binding
        if b.stored_until < before and now < b.expires_at and b.stored_until < b.expires_at:
            if not self._remote(b):
                b.stored_until = b.expires_at
                self.writer.put(b)

    async def persist(self) -> None:
        """Before a clean stop: every binding's refresh in the store, so a restart
        routes to it as long as before."""
        now = self.clock()
        for bindings in self.bindings.values():
            for b in bindings:
                self._rewrite_lapsing(b, float("inf"), now)
        await self.writer.flush()

    def binding(self, aor: str, key: str) -> Binding | None:
        bindings = self.bindings.get(aor, ())
        i = _index(bindings, key)
        return bindings[i] if i >= 0 else None

    def _put(self, binding: Binding) -> Binding | None:
        """In place of the binding of the same key (returned), or after the others."""
        bindings = self.bindings.get(binding.aor, ())
        i = _index(bindings, binding.key)
        if i < 0:
            self.bindings[binding.aor] = (*bindings, binding)
            return None
        self.bindings[binding.aor] = (*bindings[:i], binding, *bindings[i + 1 :])
        return bindings[i]

    def _pop(self, aor: str, key: str) -> Binding | None:
        bindings = self.bindings.get(aor, ())
        i = _index(bindings, key)
        if i < 0:
            return None
        rest = (*bindings[:i], *bindings[i + 1 :])
        if rest:
            self.bindings[aor] = rest
        else:
            del self.bindings[aor]
        return bindings[i]

    def _keep(self, binding: Binding) -> None:
        old = self._put(binding)
        if old is not None:
            self._unflow(old)
        self._counted(old, binding)
        if binding.flow:
            self._by_flow.setdefault(binding.flow, set()).add((binding.aor, binding.key))

    def _unflow(self, binding: Binding) -> None:
        on_flow = self._by_flow.get(binding.flow) if binding.flow else None
        if on_flow is not None:
            on_flow.discard((binding.aor, binding.key))
            if not on_flow:
                del self._by_flow[binding.flow]

    def _remove(self, aor: str, key: str, why: str = "unregistered") -> None:
        gone = self._forget(aor, key, why)
        self.writer.delete(aor, key)
        if gone is not None and self.peers is not None:
            self.peers.removed(gone)

    def _forget(self, aor: str, key: str, why: str = "unregistered") -> Binding | None:
        """Out of memory (the store is someone else's business)."""
        gone = self._pop(aor, key)
        if gone is not None:
            self._unflow(gone)
            self._counted(gone, None, why)
        return gone

    def _counted(self, old: Binding | None, new: Binding | None, why: str = "") -> None:
        """A binding came, was refreshed or went: counted, and logged (refreshes at
        DEBUG), when it is this node's own; another node logs its own."""
        if old is not None and not self._remote(old):
            if new is not None and not self._remote(new):
                self.metrics.binding_change("refreshed")
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("binding refreshed: %s %s", new.aor, _where(new),
                              extra=_binding_fields(new))  # fmt: skip
                return
            self.binding_count -= 1
            self.metrics.binding_change(why or "moved")
            if log.isEnabledFor(logging.INFO):  # the fields cost more than the test
                fields = {**_binding_fields(old), "reason": why or "moved"}
                log.info("binding gone (%s): %s %s", (why or "moved").replace("_", " "),
                         old.aor, _where(old), extra=fields)  # fmt: skip
        if new is not None and not self._remote(new):
            self.binding_count += 1
            self.metrics.binding_change("new")
            if log.isEnabledFor(logging.INFO):
                log.info("binding new: %s %s", new.aor, _where(new),
                         extra=_binding_fields(new))  # fmt: skip

    def _remove_all(self, aor: str, request: Message) -> None:
        for b in self.bindings.get(aor, ()):
            if b.call_id != request.call_id or b.cseq < request.cseq[0]:
                self._remove(aor, b.key)

    def _ok(self, request: Message, aor: str) -> Message:
        resp = _answer(request, 200)
        now = self.clock()
        for b in self.bindings.get(aor, ()):
            left = int(b.expires_at - now)
            if left > 0:
                resp.add("Contact", f"<{b.contact}>;expires={left}")
        resp.add("Feature-Caps", FEATURE_CAPS)
        resp.add("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
        return resp

    # -------------------------------------------------------------- maintenance
    async def flow_closed(self, flow: str) -> None:
        """A TCP/TLS connection dropped: its bindings can't be reached any more."""
        for aor, key in list(self._by_flow.get(flow, ())):
            self._remove(aor, key, "flow_closed")

    async def expire(self) -> int:
        """Drop expired bindings from memory and store; returns how many went."""
        now = self.clock()
        gone = 0
        for n, aor in enumerate(list(self.bindings)):
            if n % EXPIRE_SLICE == EXPIRE_SLICE - 1:
                await asyncio.sleep(0)  # a million bindings must not stall calls for long
            # now, not as it was when the sweep began
            for b in self.bindings.get(aor, ()):
                if b.expires_at <= now:
                    self._forget(aor, b.key, "expired")
                    gone += 1
                else:
                    # its copy in the store lapsing before the next sweep is written
                    # now, so neither the purge nor another node's resync drops it
                    self._rewrite_lapsing(b, now + LAPSE_AHEAD, now)
        await self.writer.flush()  # a refresh still queued must not be purged, nor undo it
        await self.store.purge_expired_bindings(now)
        return gone


def _index(bindings: tuple[Binding, ...], key: str) -> int:
    """Where the binding of `key` is among a user's, -1 if not there."""
    for i, b in enumerate(bindings):
        if b.key == key:
            return i
    return -1


@dataclass(frozen=True, slots=True, init=False)
class Reach:
    """How to send a request to a binding: Request-URI, next hop, Route set (RFC 3327 Path)."""

    request_uri: str
    peer: Peer
    route: list[str]

    def __init__(self, request_uri: str, peer: Peer, route: list[str]) -> None:
        # written out, not generated: see speedups.py on dataclasses
        object.__setattr__(self, "request_uri", request_uri)
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "route", route)


def reach(binding: Binding) -> Reach:
    """Requests go back where the REGISTER came from (NAT, RFC 5626 flow), to the contact
    URI without its pn-* parameters: push data never leaves the server."""
    uri = URI.parse(binding.contact)
    uri.params = strip_push_params(uri.params)
    if binding.received:
        peer = Peer.parse(binding.received, binding.flow)
    else:
        transport = (uri.params.get("transport") or "udp").lower()
        peer = Peer(transport, uri.host.strip("[]"), uri.port or 5060)
    return Reach(str(uri), peer, list(binding.path))


def forwarded(request: Message, binding: Binding) -> tuple[Message, Peer]:
    """`request` as a proxy forwards it to `binding` (RFC 3261 §16.6): a copy with the
    binding's contact as Request-URI and its Route set on top; and the next hop."""
    target = reach(binding)
    msg = proxy.forward_copy(request)
    msg.uri = target.request_uri
    for route in reversed(target.route):
        msg.add("Route", route, first=True)
    return msg, target.peer


def store_write_due(old: Binding, new: Binding) -> bool:
    """Whether the store needs `new`, which replaces `old` in memory. Memory routes;
    the store's copy only brings a binding back after a restart. So a refresh that
    moves nothing but the expiry (and the Call-ID, CSeq) is not written while the copy
    still covers half the new lifetime: a phone refreshing every few seconds costs one
    write per half lifetime, not one per REGISTER. A clean stop writes them all
    (`persist`), the sweep those about to lapse; a crash may restore a binding with its
    older expiry, which the phone's next refresh renews."""
    if not old.stored_until or any(
        getattr(old, name) != getattr(new, name) for name in _STORED
    ):
        return True
    now = new.updated_at
    return old.stored_until < now + (new.expires_at - now) / 2


def _uploaded_device(devices: list[Device], instance: str, push: PushParams) -> Device | None:
    """The device the app uploaded over HTTP for this same installation: same
    +sip.instance, or (when either has none) the same token."""
    for d in devices:
        if instance and d.instance:
            if d.instance == instance:
                return d
        elif d.provider == push.provider and (
            (push.push_token and d.push_token == push.push_token)
            or (push.voip_token and d.voip_token == push.voip_token)
        ):
            return d
    return None


def _where(binding: Binding) -> str:
    """How a binding is reached, for a log line: device or instance, and source. Never
    the contact URI: its pn-prid is a push token."""
    who = f"device {binding.device_id}" if binding.device_id else binding.instance or "no device"
    return f"({who}) from {binding.received or 'an unknown source'}"


def _binding_fields(binding: Binding) -> dict[str, object]:
    """A binding's structured log fields (JSON format). No pn-* values: the contact
    URI, which carries the push token, is not among them."""
    source = binding.received or ""
    return {
        "user": binding.aor,
        "device": binding.device_id,
        "instance": binding.instance,
        "transport": source.partition(":")[0],
        "source": source,
        "user_agent": binding.user_agent,
        "expires_at": int(binding.expires_at),
    }


def _device_fields(device: Device) -> dict[str, object]:
    """A device's structured log fields: never its tokens."""
    return {
        "user": device.aor,
        "device": device.device_id,
        "platform": device.platform,
        "provider": device.provider,
        "call_mode": device.call_mode,
    }


def _answer(request: Message, status: int, reason: str | None = None) -> Message:
    """A registrar's answer: as a UAS it tags the To (RFC 3261 §8.2.6.2)."""
    return make_response(request, status, reason, to_tag=new_tag())


def _contact_expires(contact: NameAddr, header: int | None, default: int) -> int:
    text = contact.params.get("expires")
    if text is not None and text.isdigit() and len(text) <= 10:
        return int(text)
    return header if header is not None else default
