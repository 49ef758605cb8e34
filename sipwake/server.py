"""Assembles one sipwake node from its configuration and runs it.

Wire → SIP core → services → stores and push: the transport hands parsed messages
to the transaction layer, which hands new requests to the router, which hands them
to the service owning the method (registrar, calls, messages, voicemail).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import resource
import secrets
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from sipwake import heap
from sipwake.api.console import ConsoleSources
from sipwake.api.http import ApiDeps, ApiSettings, HttpApi
from sipwake.auth import Admission, AuthThrottle, UserDirectory, without_credentials
from sipwake.calls.log import CallLogWriter
from sipwake.calls.service import IN_DIALOG_METHODS, CallService
from sipwake.cluster.bus import Bus
from sipwake.cluster.node import Cluster
from sipwake.cluster.relay import Relay
from sipwake.cluster.routes import InternalRoutes
from sipwake.collector import FullCollections
from sipwake.config import Config, ListenSpec, parse_listen
from sipwake.messages.inbox import Inbox
from sipwake.metrics import Cached, Metrics, Reading
from sipwake.push.service import PushService
from sipwake.push_setup import build_push
from sipwake.registrar.registrar import Registrar, RegistrarSettings
from sipwake.registrar.trace import RegistrationTrace
from sipwake.retention import Retention
from sipwake.router import Router
from sipwake.sip.digest import DigestAuth
from sipwake.sip.guard import Limits
from sipwake.sip.peer import TrustedPeers
from sipwake.sip.timer_slots import TimerSlots
from sipwake.sip.trace import trace as sip_trace
from sipwake.sip.transaction import ServerTransaction, Timers, TransactionLayer
from sipwake.sip.transport import TransportLayer, canonical_host
from sipwake.sip.uac import Uac
from sipwake.store import open_store
from sipwake.store.base import Store
from sipwake.store.errors import ERRORS as STORE_ERRORS
from sipwake.store.errors import log_failure
from sipwake.store.models import PushAttempt
from sipwake.tasks import Tasks
from sipwake.timeline import Timeline
from sipwake.voicemail import Voicemail

log = logging.getLogger("sipwake.server")

EXPIRY_SWEEP = 30.0  # seconds between expired-binding sweeps
RESERVED_FILES = 256  # descriptors kept from SIP streams: store, HTTP, pushes, logs
STOP_TIMEOUT = 9.0  # seconds a stop may take, all in (DESIGN: exit within 10 s)
STOP_DRAIN = 3.0  # seconds for requests and deliveries in flight to finish


@dataclass(frozen=True, slots=True)
class _PushLog:
    """The push service's log: attempts go to the store; a refused token's device is
    disabled through the registrar, the one owner of the device cache."""

    registrar: Registrar
    store: Store

    async def disable_device(self, device_id: str, reason: str, token_at: float) -> bool:
        return await self.registrar.disable_device(device_id, reason, token_at)

    async def add_push_attempt(self, attempt: PushAttempt) -> None:
        await self.store.add_push_attempt(attempt)


class Server:
    def __init__(self, config: Config, worker: int | None = None) -> None:
        """`worker`: one of `serve --workers N` (workers.py), sharing the listeners."""
        self.config = config
        self.worker = worker
        self.store: Store
        self.registrar: Registrar
        self.push: PushService  # APNs/FCM, or the developer sink
        self.router = Router()
        sip = config.sip
        self.trusted_peers = TrustedPeers(sip.trusted_peers)  # calls, inbox, voicemail
        limits = Limits(
            source_rate=sip.source_rate, source_burst=sip.source_burst,
            max_connections=sip.max_connections,
            max_per_address=sip.max_connections_per_address,
            message_timeout=sip.message_timeout, idle_timeout=sip.idle_timeout,
        )  # fmt: skip
        self.transport = TransportLayer(
            self._received, sip.max_message_size, limits, self.trusted_peers.trusts_host
        )
        if config.log.sip_trace:
            self.transport.trace = sip_trace
        self.transactions: TransactionLayer
        self.uac: Uac
        self.secret = b""  # nonce and API-token HMAC key ([sip] secret)
        self.http: HttpApi | None = None
        self.cluster: Cluster | None = None
        self._internal: ListenSpec | None = None  # bound early: the cluster's address
        self.metrics = Metrics()
        self.timeline = Timeline()  # recent calls, messages, pushes: the admin page
        self.tasks = Tasks("server")  # background work; each service has a group of its own
        self._groups = [self.tasks]
        self._stopping = asyncio.Event()
        self.collections: FullCollections | None = None

    async def start(self) -> None:
        """Store, who is who, the registrar and pushes; the SIP core; the services
        wired to what each names; then the listeners and the housekeeping."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self.store = await open_store(cfg.store.url)
        self.admission = self._admission()
        # every user's HA1 in memory before the first REGISTER; kept current by the
        # store's change log (auth/users.py), polled from the housekeeping below
        try:
            warmed = await self.users.warm(cfg.sip.domain)
            log.info("%d users read into memory", warmed)
        except Exception as exc:
            log_failure(log, exc, "reading the users at start")
        self.cluster = await self._join()
        settings = RegistrarSettings(
            cfg.sip.domain, cfg.sip.min_expires, cfg.sip.max_expires, cfg.sip.default_expires
        )
        self.registrar = Registrar(
            settings, self.store, self.admission, peers=self.cluster, metrics=self.metrics
        )
        await self.registrar.load()
        node = self.cluster.node if self.cluster is not None else ""
        self.push = build_push(
            cfg.push, _PushLog(self.registrar, self.store), self.store, self.metrics, node
        )
        self.push.trace = self.timeline
        self.registrar.listeners.append(RegistrationTrace(self.timeline))
        await self.push.start()  # resumes the pushes a previous run left in the outbox
        self.registrar.flow_alive = self.transport.flow_alive
        self.transport.guard.has_binding = self.registrar.flow_has_binding
        self.transport.on_flow_closed = lambda flow: self.spawn(self.registrar.flow_closed(flow))

        timers = Timers(t1=cfg.sip.t1, t2=cfg.sip.t2, t4=cfg.sip.t4)
        self.transactions = TransactionLayer(
            self.transport.send, self.router, TimerSlots(loop), timers
        )
        self.transport.handler = self.transactions.receive  # from now on without _received
        self.transactions.on_drained = heap.give_back
        self.uac = Uac(self.transport.address, self.transactions, self.transport.send)
        # a REGISTER without credentials gets its 401 at once, without a Task
        self.router.route("REGISTER", self._register, eager=without_credentials)
        await self._services(loop)
        if self.cluster is not None:
            self._wire_cluster(self.cluster)
        self._readings()
        await self._listen()
        self.spawn(self._sweep())
        self.spawn(self.users.run())
        self.transport.start_sweeping()
        retention = Retention(self.store, cfg.calls.log_retention_days, cfg.push.log_retention_days)
        self.spawn(retention.run())
        # Start-up objects never become garbage: keep the cyclic collector off them.
        gc.freeze()
        self.collections = FullCollections(loop)  # full ones at quiet moments
        self.collections.start()
        log.info("sipwake serving domain %s", cfg.sip.domain)

    def _admission(self) -> Admission:
        """Digest (nonces keyed by [sip] secret), the users cache, the throttle."""
        cfg = self.config
        self.secret = cfg.sip.secret.encode() if cfg.sip.secret else secrets.token_bytes(32)
        if not cfg.sip.secret:
            log.warning(
                "[sip] secret is empty, so a random one is made at each start: every restart "
                "voids the API bearer tokens (meant to last [auth] token_ttl, %g h) and the "
                "digest nonces handed out; set [sip] secret (or SIPWAKE_SIP_SECRET) to a long "
                "random string, e.g. from: "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
                cfg.auth.token_ttl / 3600,
            )
        digest = DigestAuth(
            self.secret, cfg.sip.realm, list(cfg.sip.digest_algorithms), cfg.sip.nonce_ttl
        )
        self.users = UserDirectory(self.store)
        throttle = AuthThrottle(
            cfg.auth.max_failures, cfg.auth.failure_window, cfg.auth.block_time
        )
        return Admission(
            digest, self.users, cfg.sip.domain, self.trusted_peers, throttle,
            self.transport.is_us, self.metrics.auth_failures,
        )  # fmt: skip

    async def _join(self) -> Cluster | None:
        """With `[cluster] redis_url`: this node's internal address (its first tcp:
        listener, bound now so its port is known; else one more on a free port), the
        routes signed with `[sip] secret`, the bus."""
        cfg = self.config
        if not cfg.cluster.redis_url:
            return None
        specs = [parse_listen(s) for s in cfg.sip.listen]
        tcp = next((s for s in specs if s.transport == "tcp"), None)
        if tcp is None or self.worker is not None:  # a worker shares the tcp: one
            tcp = None
            host, port = specs[0].host, 0
        else:
            host, port = tcp.host, tcp.port
        self._internal = tcp
        listener = await self.transport.listen("tcp", host, port)
        shown = cfg.sip.advertise or listener.host
        node = f"tcp:{f'[{shown}]' if ':' in shown else shown}:{listener.port}"
        # one cluster: the nodes sharing a domain and a secret
        tag = hashlib.sha256(self.secret).hexdigest()[:12]
        bus = Bus(cfg.cluster.redis_url, f"sipwake:{cfg.sip.domain}:{tag}", node)
        return Cluster(bus, InternalRoutes(self.secret, node))

    def _wire_cluster(self, cluster: Cluster) -> None:
        """Requests other nodes route through us; their registrations (fork-late);
        the limits, the throttle and nonce replay counted across the cluster."""
        relay = Relay(cluster.routes, self.registrar, self.calls, self.uac, self.spawn)
        self.router.claims.append(relay.claim)
        cluster.tag_branches(self.uac)
        self.router.response_handlers.insert(0, cluster.stray(self.transport))
        cluster.serve_location(self.registrar, [self.calls], self.spawn)
        cluster.share_limiter("calls.source", self.calls.source_pushes)
        cluster.share_limiter("calls.callee", self.calls.callee_pushes)
        cluster.share_limiter("inbox.sender", self.inbox.limiter)
        cluster.share_mail(self.inbox, self.registrar, self.spawn)
        cluster.share_coalescing(self.inbox.pushes)
        cluster.share_throttle(self.admission.throttle)
        cluster.share_nonces(self.admission.digest)
        self.spawn(cluster.adopt_outboxes(self.push))
        cluster.bus.start()
        redis = _redacted(self.config.cluster.redis_url)
        log.info("cluster node %s (Redis %s)", cluster.node, redis)

    async def _services(self, loop: asyncio.AbstractEventLoop) -> None:
        """Calls, the inbox and voicemail, each given what it names, and routed to."""
        cfg = self.config
        self.call_log = CallLogWriter(self.store, loop)
        self.calls = CallService(
            cfg.calls, cfg.sip.domain,
            locations=self.registrar, users=self.users, gate=self.admission, uac=self.uac,
            wire=self.transport, pusher=self.push, call_log=self.call_log, metrics=self.metrics,
            spawn=self.spawn, scheduler=loop, ack_wait=64 * cfg.sip.t1, parks=self.cluster,
            start=self.tasks.start,
            trace=self.timeline,
        )  # fmt: skip
        self._wire_calls(self.calls)
        self.inbox = Inbox(  # MESSAGE: store, deliver, push
            cfg.messages, cfg.sip.domain,
            store=self.store, locations=self.registrar, users=self.users, gate=self.admission,
            uac=self.uac, pusher=self.push, tasks=self._group("inbox"), scheduler=loop,
            trace=self.timeline,
        )  # fmt: skip
        self.router.route("MESSAGE", self.inbox.on_message)
        self.registrar.listeners.append(self.inbox)
        if cfg.messages.retention_days > 0:
            self.spawn(self.inbox.purge_every())
        await self.inbox.load()
        self.voicemail = Voicemail(  # NOTIFY/SUBSCRIBE message-summary, pushes
            cfg.voicemail, cfg.sip,
            store=self.store, users=self.users, locations=self.registrar, gate=self.admission,
            trusted=self.trusted_peers, is_us=self.transport.is_us, uac=self.uac,
            pusher=self.push, tasks=self._group("voicemail"),
        )  # fmt: skip
        self.voicemail.install(self.router)
        self.spawn(self.voicemail.subscriptions.expire_forever())

    def _readings(self) -> None:
        """What /metrics reads from the node at each scrape: counts it keeps anyway."""
        m, calls = self.metrics, self.calls
        m.read(Reading("gauge", "sipwake_bindings", "Live SIP bindings on this node",
                       lambda: self.registrar.binding_count))
        m.read(Reading("gauge", "sipwake_calls_ringing",
                       "Calls to a local user not yet answered nor ended (parked included)",
                       lambda: len(calls.calls)))
        m.read(Reading("gauge", "sipwake_calls_parked",
                       "Calls waiting for a woken app: no device answered SIP yet",
                       lambda: calls.counts()["parked"]))
        m.read(Reading("gauge", "sipwake_connections", "Open SIP stream connections",
                       lambda: {(k,): n for k, n in self.transport.connections().items()},
                       ("transport",)))
        m.read(Reading("counter", "sipwake_messages_stored",
                       "MESSAGEs stored in an inbox (a resend counts once)",
                       lambda: self.inbox.stored))
        m.read(Reading("counter", "sipwake_messages_delivered",
                       "Inbox deliveries a device answered 2xx (each device counts)",
                       lambda: self.inbox.courier.deliveries))
        m.read(Reading("counter", "sipwake_store_errors",
                       "Store operations that failed, by kind (an outage's kind, or error)",
                       lambda: {(k,): n for k, n in STORE_ERRORS.items()}, ("kind",)))
        devices = Cached(self.store.device_counts)
        m.before_scrape(devices.refresh)
        m.read(Reading("gauge", "sipwake_devices",
                       "Push devices by platform and state (read from the store, every 30 s "
                       "at most)",
                       lambda: {(p, "enabled" if on else "disabled"): n
                                for (p, on), n in devices.value.items()},
                       ("platform", "state")))  # fmt: skip

    async def _listen(self) -> None:
        """SIP on every [sip] listen address, then the HTTP API."""
        cfg = self.config
        self._fit_connections()
        tls = self._tls_context()
        self.transport.advertise = canonical_host(cfg.sip.advertise) if cfg.sip.advertise else ""
        for spec in cfg.sip.listen:
            listen = parse_listen(spec)
            if listen == self._internal:
                continue  # bound already: the cluster's internal address
            await self.transport.listen(
                listen.transport, listen.host, listen.port, tls, reuse_port=self.worker is not None
            )
            if listen.host.strip("[]") in ("0.0.0.0", "::") and not cfg.sip.advertise:
                log.warning(
                    "%s listens on every address: Via and Record-Route will say %s, which "
                    "phones can't reach; set [sip] advertise", spec, listen.host
                )
        self.http = HttpApi(self._api_deps())
        await self.http.start(cfg.http.listen, self._http_tls(), self.worker is not None)

    def _wire_calls(self, calls: CallService) -> None:
        """INVITE and what follows it go to the calls service; it hears of registrations
        (fork-late) and of accepted call pushes (latency metrics)."""
        router = self.router
        # a call is parked and pushed in the turn that read its INVITE (Tasks.start)
        router.route("INVITE", calls.on_invite, at_once=True)
        for method in IN_DIALOG_METHODS:
            router.route(method, calls.on_in_dialog)
        router.cancel_handlers.append(calls.on_cancel)
        router.ack_handlers.append(calls.on_ack)
        router.response_handlers.append(calls.on_stray_response)
        self.registrar.listeners.append(calls)
        self.push.on_accepted = calls.push_accepted
        self.spawn(calls.sweep_dialogs())

    def _received(self, msg: Any) -> None:
        """Until start() hands the transport to the transactions: what the internal
        listener hears before we're up goes nowhere."""

    def _register(self, st: ServerTransaction) -> Coroutine[Any, Any, None]:
        return self.registrar.handle_register(st.request, st.respond)

    def _fit_connections(self) -> None:
        """Stream connections stay below the open-file limit (raised to the hard limit),
        so the HTTP API, the store and the push connections always find a descriptor."""
        nofile = raise_open_files()
        room = nofile - RESERVED_FILES
        guard = self.transport.guard
        if room < guard.max_total:
            guard.max_total = max(1, room)
            log.warning(
                "open-file limit %d: at most %d SIP stream connections (raise it, e.g. "
                "LimitNOFILE= in the systemd unit)", nofile, guard.max_total,
            )  # fmt: skip

    def _tls_context(self) -> ssl.SSLContext | None:
        sip = self.config.sip
        return _server_tls(sip.tls_cert, sip.tls_key) if sip.tls_cert else None

    def _http_tls(self) -> ssl.SSLContext | None:
        http = self.config.http
        return _server_tls(http.tls_cert, http.tls_key) if http.tls_cert else None

    def _api_deps(self) -> ApiDeps:
        """What the HTTP API uses of this node (it never sees the node itself)."""
        cfg = self.config
        return ApiDeps(
            settings=ApiSettings(
                domain=cfg.sip.domain, realm=cfg.sip.realm, api_token=cfg.http.api_token,
                token_ttl=cfg.auth.token_ttl, secret=self.secret,
            ),
            store=self.store, admission=self.admission, users=self.users,
            registry=self.registrar, inbox=self.inbox, calls=self.calls,
            voicemail=self.voicemail, sink=self.push.sink, metrics=self.metrics,
            counts={"calls": self.calls.counts, "transactions": self.transactions.counts},
            console=ConsoleSources(self.registrar, self.calls, self.inbox, self.push,
                                   self.timeline),
        )  # fmt: skip

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP)
            try:
                gone = await self.registrar.expire()
                if gone:
                    log.info("%d bindings expired", gone)
            except Exception as exc:
                log_failure(log, exc, "binding sweep")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.spawn(coro)

    def _group(self, name: str) -> Tasks:
        """A service's own group of background tasks, stopped with the node."""
        group = Tasks(name)
        self._groups.append(group)
        return group

    async def stop(self) -> None:
        """SIGTERM (DESIGN "Stopping"): take no new work (503 + Retry-After), give every
        ringing call its final answer, let requests and deliveries in flight finish (a
        2xx a phone sent is marked, so nothing is delivered twice after the restart),
        flush what is queued for the store, close — all within STOP_TIMEOUT."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT

        def left(most: float) -> float:
            return max(0.0, min(most, deadline - loop.time()))

        self.router.stopping = True
        if self.collections is not None:
            self.collections.stop()
        ended = self.calls.stop()
        self.inbox.courier.stop()
        if self.http is not None:
            await self.http.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left(STOP_DRAIN)):
                await self.router.drain()  # REGISTERs written, MESSAGEs committed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left(STOP_DRAIN)):
                await self.inbox.courier.idle()  # 2xx answers in flight, marked
        for group in self._groups:
            await group.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left(STOP_DRAIN)):
                await self.call_log.flush()  # the calls just ended with 503 too
        try:
            async with asyncio.timeout(left(STOP_TIMEOUT)):
                await self.registrar.persist()  # refreshes left unwritten too
        except TimeoutError:
            left_over = self.registrar.writer.pending()
            log.error("stopping with %d binding changes not stored", left_over)
        if self.cluster is not None:
            await self.cluster.bus.close()  # "bye": the others stop routing to us
        await self.transport.close()
        await self.push.close()
        await self.store.close()
        log.info("sipwake stopped (%d ringing calls answered 503)", ended)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        await self._stopping.wait()
        await self.stop()


def _redacted(url: str) -> str:
    """A URL without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{creds.split(':')[0]}:***@{host}" if at and ":" in creds else url


def _server_tls(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    return ctx


def raise_open_files() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)
