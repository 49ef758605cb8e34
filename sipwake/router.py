"""Hands each new SIP request to the service that owns its method.

This is the transaction user: the transaction layer calls it for new requests,
CANCELs, end-to-end ACKs and stray responses. Services register a handler per
method; a handler may be a coroutine (its own task) or a plain function.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sipwake.lograte import LogRate
from sipwake.sip.errors import SipParseError
from sipwake.sip.message import Message, make_response
from sipwake.sip.transaction import ServerTransaction, new_tag
from sipwake.store.errors import unavailable
from sipwake.tasks import Resumed, Tasks

log = logging.getLogger("sipwake.router")

Handler = Callable[[ServerTransaction], Awaitable[None] | None]
# Whether a request's handler may take its first steps in the callback that read it
Eager = Callable[[Message], bool]

SUPPORTED = "path, outbound, gruu"
_EXTENSIONS = frozenset(t.strip() for t in SUPPORTED.split(","))
SCHEMES = ("sip", "sips", "tel")
# requests we proxy: their Require is for the far end (RFC 3261 §16.3), only
# Proxy-Require is ours to check
_PROXIED = ("INVITE",)
STOP_RETRY_AFTER = 5  # seconds: what a stopping node tells callers to wait
STORE_RETRY_AFTER = 5  # seconds: what we ask for while the store is failing


class Router:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {"OPTIONS": self._options}
        # asked first: one may take a request whatever its method (a cluster relay)
        self.claims: list[Callable[[ServerTransaction], bool]] = []
        self._eager: dict[str, Eager] = {}
        self._at_once: set[str] = set()  # methods whose handler's task starts at once
        self.cancel_handlers: list[Callable[[ServerTransaction], bool]] = []
        self.ack_handlers: list[Callable[[Message], bool]] = []
        self.response_handlers: list[Callable[[Message], bool]] = []
        self.tasks = Tasks("sip handlers")  # async handlers in flight
        self.stopping = False  # new out-of-dialog requests get 503: this node is going
        self._outages = LogRate(60.0)

    def route(
        self, method: str, handler: Handler, eager: Eager | None = None, at_once: bool = False
    ) -> None:
        """`eager(request)` true: the async handler's first steps run at once, in the
        callback that read the request (see _start). Only for requests whose handler
        can't reach code that calls asyncio.current_task() before it first waits
        (asyncio.timeout and timing.timeout do; so does asyncpg's connect).
        `at_once`: the handler's task is started there (Tasks.start), its first steps
        already in that task; without, they wait a loop turn, behind all the loop read."""
        self.handlers[method] = handler
        if eager is None:
            self._eager.pop(method, None)
        else:
            self._eager[method] = eager
        if at_once:
            self._at_once.add(method)
        else:
            self._at_once.discard(method)

    @property
    def allow(self) -> str:
        return ", ".join(sorted({*self.handlers, "ACK", "CANCEL"}))

    # ---------------------------------------------------- TransactionUser API
    def on_request(self, st: ServerTransaction) -> None:
        request = st.request
        if self.stopping and not request.to_tag:
            # RFC 3261 §21.5.4: the phone or proxy tries another node, or this one later
            resp = make_response(request, 503, "Service Unavailable (shutting down)",
                                 to_tag=new_tag())  # fmt: skip
            resp.add("Retry-After", str(STOP_RETRY_AFTER))
            st.respond(resp)
            return
        for claim in self.claims:
            if claim(st):
                return
        handler = self.handlers.get(request.method.upper())
        if handler is None:
            resp = make_response(request, 405, to_tag=new_tag())
            resp.add("Allow", self.allow)
            st.respond(resp)
            return
        refusal = _unsupported(request)
        if refusal is not None:
            st.respond(refusal)
            return
        try:
            mf = request.max_forwards
            if mf is not None and mf <= 0 and request.method != "OPTIONS":
                st.reply(483)
                return
            result = handler(st)
        except SipParseError as exc:
            self._bad_request(st, exc)
            return
        if result is None:
            return
        eager = self._eager.get(request.method)
        if eager is not None and isinstance(result, Coroutine) and eager(request):
            self._start(st, result)
        elif request.method in self._at_once:
            self.tasks.start(self._guard(st, result))
        else:
            self.tasks.spawn(self._guard(st, result))

    def _start(self, st: ServerTransaction, work: Coroutine[Any, Any, None]) -> None:
        """Run a handler up to its first real wait here: one that never waits (a 401
        challenge) is answered without a Task, which was ~5 % of a REGISTER's CPU. One
        that does wait goes on in a Task from there."""
        try:
            yielded = work.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._failed(st, exc)
            return
        self.tasks.spawn(Resumed(work, yielded, lambda exc: self._failed(st, exc)))

    async def _guard(self, st: ServerTransaction, work: Awaitable[None]) -> None:
        """Run an async handler; a failure becomes 400/500 (503 while the store is
        failing), never a silent drop."""
        try:
            await work
        except Exception as exc:
            self._failed(st, exc)

    def _failed(self, st: ServerTransaction, exc: Exception) -> None:
        if isinstance(exc, SipParseError):
            self._bad_request(st, exc)
            return
        outage = unavailable(exc)
        if outage is None:
            log.error("handler for %s failed", st.request.method, exc_info=exc)
            self._fail(st, 500, None)
            return
        skipped = self._outages.due(outage.kind)
        if skipped is not None:  # one line a minute per kind, not one per request
            log.error("store unavailable (%s): %s answered 503%s", outage, st.request.method,
                      f"; {skipped} more since the last line" if skipped else "")  # fmt: skip
        if st.last_response is None or st.last_response.status < 200:
            resp = make_response(st.request, 503, "Service Unavailable (store)",
                                 to_tag=new_tag())  # fmt: skip
            resp.add("Retry-After", str(STORE_RETRY_AFTER))
            st.respond(resp)

    def _bad_request(self, st: ServerTransaction, exc: SipParseError) -> None:
        """A header read lazily turned out malformed: 400 naming it, and a log line."""
        log.warning("bad %s from %s: %s", st.request.method, st.request.source, exc.args[0])
        detail = str(exc.args[0]).replace("\r", " ").replace("\n", " ")[:80]
        self._fail(st, 400, f"Bad Request ({detail})")

    @staticmethod
    def _fail(st: ServerTransaction, status: int, reason: str | None) -> None:
        if st.last_response is None or st.last_response.status < 200:
            st.reply(status, reason)

    def on_cancel(self, invite: ServerTransaction) -> None:
        for handler in self.cancel_handlers:
            if handler(invite):
                return
        last = invite.last_response  # the tag of a 180 already sent, else a new one
        tag = last.to_tag if last is not None and last.to_tag else new_tag()
        invite.respond(make_response(invite.request, 487, to_tag=tag))

    def on_ack(self, ack: Message) -> None:
        for handler in self.ack_handlers:
            if handler(ack):
                return

    def on_stray_response(self, resp: Message) -> None:
        for handler in self.response_handlers:
            if handler(resp):
                return

    # ------------------------------------------------------------------ OPTIONS
    def _options(self, st: ServerTransaction) -> None:
        """Keep-alive pings and capability queries: always 200."""
        resp = make_response(st.request, 200, to_tag=new_tag())
        resp.add("Allow", self.allow)
        resp.add("Accept", "application/sdp, text/plain, message/cpim")
        resp.add("Supported", SUPPORTED)
        st.respond(resp)

    async def drain(self) -> None:
        """Until the handlers in flight are done (clean shutdown; the caller bounds it)."""
        await self.tasks.settled()


def _unsupported(request: Message) -> Message | None:
    """416 for a Request-URI scheme we don't serve; 420 naming the extensions it
    requires of us that we lack (RFC 3261 §8.2.2.1, §8.2.2.3; RFC 4475 §3.3.2–3.3.5)."""
    scheme = request.uri.partition(":")[0].lower()
    if scheme not in SCHEMES:
        return make_response(request, 416, to_tag=new_tag())
    names = ["Proxy-Require"]
    if request.method not in _PROXIED and not request.to_tag:
        names.append("Require")
    wanted = [
        tag.strip() for name in names for value in request.get_all(name)
        for tag in value.split(",") if tag.strip()
    ]  # fmt: skip
    missing = [tag for tag in wanted if tag.lower() not in _EXTENSIONS]
    if not missing:
        return None
    resp = make_response(request, 420, to_tag=new_tag())
    resp.add("Unsupported", ", ".join(missing))
    return resp
