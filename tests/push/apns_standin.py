"""A strict local stand-in for Apple's APNs HTTP/2 provider API.

It checks what Apple checks (and a little more, where sipwake has promised
more): method and path, the ES256 provider token (signature, kid, iss, iat no
older than an hour and not in the future), push type against topic, priority,
expiration, collapse id, apns-id, payload JSON and size (413 beyond 4096 bytes,
5120 for VoIP), and it never opens more streams than it advertised in
SETTINGS_MAX_CONCURRENT_STREAMS without noting a violation. Every refusal that
was not programmed by the test is a violation; tests assert there are none.

Also used by bench/push.py, so the hot path stays reasonably lean (verified
JWTs are cached by their exact bytes; their age is checked on every request).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from hyperframe.frame import GoAwayFrame

PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm",
              "location", "liveactivity", "pushtotalk", "controls", "widgets"}
_PATH = re.compile(r"/3/device/([^/]*)")
_HEX = re.compile(r"[0-9a-fA-F]{64,200}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass
class Reply:
    """A programmed answer: Reply(410, "Unregistered", timestamp_ms=...)."""

    status: int
    reason: str = ""
    timestamp_ms: int | None = None
    retry_after: str | None = None
    drop: bool = False  # close the connection instead of answering


@dataclass
class Request:
    connection: int
    stream_id: int
    headers: dict[str, str]
    body: bytes
    token: str
    jwt: str
    status: int = 0
    reason: str = ""

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class APNsStandIn:
    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        public_key: ec.EllipticCurvePublicKey,
        topics: set[str],
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
        max_concurrent_streams: int = 1000,
        response_delay: float = 0.0,
        goaway_after: int | None = None,
        record: bool = True,
    ) -> None:
        self.team_id, self.key_id, self.public_key = team_id, key_id, public_key
        self.topics = topics
        self.clock = clock
        self.ssl_context = ssl_context
        self.max_concurrent_streams = max_concurrent_streams
        self.response_delay = response_delay
        self.goaway_after = goaway_after
        self.record = record
        self.programs: dict[str, deque[Reply]] = defaultdict(deque)
        self.sticky: dict[str, Reply] = {}
        self.token_topics: dict[str, str] = {}  # token -> bundle it belongs to
        self.expired_jwts: set[str] = set()
        self.requests: list[Request] = []
        self.answered = 0
        self.jwts: set[str] = set()
        self.violations: list[str] = []
        self.connections = 0
        self.peak_streams = 0
        self.pings = 0
        self.ping_event = asyncio.Event()
        self.request_event = asyncio.Event()  # set when any request starts arriving
        self._handled = asyncio.Event()  # set when a request has been checked and recorded
        self._jwt_cache: dict[str, dict[str, Any]] = {}
        self._conns: set[_ServerConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    # -- test controls -----------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def program(self, token: str, *replies: Reply) -> None:
        """Answer the next requests for `token` with these replies, in order."""
        self.programs[token].extend(replies)

    def always(self, token: str, reply: Reply) -> None:
        self.sticky[token] = reply

    def expire_current_jwts(self) -> None:
        """Every provider token seen so far is now answered with ExpiredProviderToken."""
        self.expired_jwts |= self.jwts

    def goaway_all(self) -> None:
        for conn in list(self._conns):
            conn.goaway()

    async def start(self) -> APNsStandIn:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.abort()
            await self._server.wait_closed()

    # -- protocol checks -------------------------------------------------------------

    def _verify_jwt(self, token: str) -> dict[str, Any] | None:
        claims = self._jwt_cache.get(token)
        if claims is None:
            try:
                header = jwt.get_unverified_header(token)
                # iat is checked below against our (possibly fake) clock.
                claims = jwt.decode(token, self.public_key, algorithms=["ES256"],
                                    options={"verify_iat": False, "require": ["iss", "iat"]})
            except jwt.PyJWTError:
                return None
            if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
                return None
            if not isinstance(claims.get("iat"), int):
                return None
            self._jwt_cache[token] = claims
        return claims

    def handle(self, conn_no: int, stream_id: int, headers: dict[str, str],
               body: bytes) -> tuple[int, str, Reply | None]:
        """Check one request; returns (status, reason, programmed reply or None)."""
        auth = headers.get("authorization", "")
        token_jwt = auth[7:] if auth.startswith("bearer ") else ""
        match = _PATH.fullmatch(headers.get(":path", ""))
        device_token = match.group(1) if match else ""
        request = Request(conn_no, stream_id, headers, body, device_token, token_jwt)
        status, reason, reply = self._check(headers, body, device_token, auth, token_jwt)
        request.status, request.reason = status, reason
        if self.record:
            self.requests.append(request)
        if token_jwt and status != 403:
            self.jwts.add(token_jwt)
        self._handled.set()
        return status, reason, reply

    async def wait_request(
        self, match: Callable[[Request], bool], count: int = 1, timeout: float = 10
    ) -> list[Request]:
        """The recorded requests that `match`, once there are at least `count`."""
        async with asyncio.timeout(timeout):
            while True:
                found = [r for r in self.requests if match(r)]
                if len(found) >= count:
                    return found
                self._handled.clear()
                await self._handled.wait()

    def _refuse(self, status: int, reason: str, programmed: bool = False) -> tuple[int, str, None]:
        if not programmed:
            self.violations.append(f"{status} {reason}")
        return status, reason, None

    def _check(self, headers: dict[str, str], body: bytes, device_token: str, auth: str,
               token_jwt: str) -> tuple[int, str, Reply | None]:
        if headers.get(":method") != "POST":
            return self._refuse(405, "MethodNotAllowed")
        if not headers.get(":path", "").startswith("/3/device/"):
            return self._refuse(404, "BadPath")
        if not _HEX.fullmatch(device_token):
            return self._refuse(400, "BadDeviceToken")
        if not auth:
            return self._refuse(403, "MissingProviderToken")
        claims = self._verify_jwt(token_jwt)
        if claims is None:
            return self._refuse(403, "InvalidProviderToken")
        now = self.clock()
        if claims["iat"] > now + 1:
            return self._refuse(403, "InvalidProviderToken")  # issued in the future
        if token_jwt in self.expired_jwts:
            return self._refuse(403, "ExpiredProviderToken", programmed=True)
        if now - claims["iat"] > 3600:
            return self._refuse(403, "ExpiredProviderToken")
        push_type = headers.get("apns-push-type", "")
        if push_type not in PUSH_TYPES:
            return self._refuse(400, "InvalidPushType")
        topic = headers.get("apns-topic", "")
        if not topic:
            return self._refuse(400, "MissingTopic")
        bundle = topic.removesuffix(".voip")
        if (push_type == "voip") != topic.endswith(".voip"):
            return self._refuse(400, "BadTopic")
        if bundle not in self.topics:
            return self._refuse(400, "TopicDisallowed")
        if self.token_topics.get(device_token, bundle) != bundle:
            return self._refuse(400, "DeviceTokenNotForTopic")
        priority = headers.get("apns-priority", "10")
        if priority not in ("1", "5", "10"):
            return self._refuse(400, "BadPriority")
        if (push_type == "background" and priority == "10") or (
            push_type == "voip" and priority != "10"
        ):
            return self._refuse(400, "BadPriority")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return self._refuse(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return self._refuse(400, "BadCollapseId")
        apns_id = headers.get("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            return self._refuse(400, "BadMessageId")
        if not body:
            return self._refuse(400, "PayloadEmpty")
        if len(body) > (5120 if push_type == "voip" else 4096):
            return self._refuse(413, "PayloadTooLarge")
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._refuse(400, "BadPayload")
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return self._refuse(400, "BadPayload")
        aps = payload["aps"]
        if push_type == "alert" and not ({"alert", "sound", "badge"} & aps.keys()):
            return self._refuse(400, "BadPayload")  # an alert push must show something
        if "badge" in aps and (not isinstance(aps["badge"], int) or isinstance(aps["badge"], bool)):
            return self._refuse(400, "BadPayload")
        program = self.programs.get(device_token)
        if program:
            reply = program.popleft()
            return reply.status, reply.reason, reply
        reply = self.sticky.get(device_token)
        if reply is not None:
            return reply.status, reply.reason, reply
        return 200, "", None


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: APNsStandIn) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.open = 0  # requests received and not answered yet
        self.served = 0
        self.goaway_last: int | None = None
        self.highest = 0
        self.number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections += 1
        self.number = self.server.connections
        self.server._conns.add(self)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 8000,
            },
        )
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.server.violations.append(f"HTTP/2 protocol error: {exc!r}")
            self.flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                sid = event.stream_id
                self.highest = max(self.highest, sid)
                self.open += 1
                self.server.peak_streams = max(self.server.peak_streams, self.open)
                self.server.request_event.set()
                if self.open > self.server.max_concurrent_streams:
                    self.server.violations.append(
                        f"{self.open} concurrent streams > {self.server.max_concurrent_streams}")
                self.streams[sid] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id in self.streams:
                    self.streams[event.stream_id][1].extend(event.data)
            elif isinstance(event, h2.events.StreamEnded):
                if self.server.response_delay:
                    asyncio.get_running_loop().call_later(
                        self.server.response_delay, self.respond, event.stream_id)
                else:
                    self.respond(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                if self.streams.pop(event.stream_id, None) is not None:
                    self.open -= 1
            elif isinstance(event, h2.events.PingReceived):
                self.server.pings += 1
                self.server.ping_event.set()
        self.flush()

    def respond(self, stream_id: int) -> None:
        entry = self.streams.pop(stream_id, None)
        if entry is None or self.transport is None or self.transport.is_closing():
            return
        if self.goaway_last is not None and stream_id > self.goaway_last:
            return  # after our GOAWAY: never processed, the client must resend
        headers, body = entry
        status, reason, reply = self.server.handle(self.number, stream_id, headers, bytes(body))
        if reply is not None and reply.drop:
            self.abort()
            return
        self.served += 1
        goaway_after = self.server.goaway_after
        if goaway_after is not None and self.served == goaway_after:
            self.goaway(stream_id, close=False)  # closed below, once this one is answered
        response = [(":status", str(status)), ("apns-id", headers.get("apns-id", ""))]
        payload = b""
        if status != 200:
            error: dict[str, Any] = {"reason": reason}
            if reply is not None and reply.timestamp_ms is not None:
                error["timestamp"] = reply.timestamp_ms
            payload = json.dumps(error).encode()
            response.append(("content-type", "application/json"))
            if reply is not None and reply.retry_after is not None:
                response.append(("retry-after", reply.retry_after))
        try:
            self.h2.send_headers(stream_id, response, end_stream=not payload)
            if payload:
                self.h2.send_data(stream_id, payload, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass  # the client reset it meanwhile
        self.open -= 1
        self.server.answered += 1
        self.flush()
        self.maybe_close()

    def goaway(self, last: int | None = None, close: bool = True) -> None:
        """A graceful GOAWAY, written raw so that h2 keeps letting us answer the
        streams we promised to (ids <= last)."""
        if self.transport is None or self.goaway_last is not None:
            return
        self.goaway_last = self.highest if last is None else last
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.goaway_last
        frame.error_code = 0
        frame.additional_data = b'{"reason":"Shutdown"}'
        self.transport.write(self.h2.data_to_send() + frame.serialize())
        if close:
            self.maybe_close()

    def maybe_close(self) -> None:
        if self.goaway_last is None or self.transport is None:
            return
        if not any(sid <= self.goaway_last for sid in self.streams):
            self.flush()
            self.transport.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
