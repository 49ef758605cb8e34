"""A strict local stand-in for Apple's APNs HTTP/2 provider API.

It checks what Apple checks (and a little more, where sipwake has promised
more): method and path, the ES256 provider token (signature, kid, iss, iat no
older than an hour and not in the future), push type against topic, priority,
expiration, collapse id, apns-id, payload JSON and size (413 beyond 4096 bytes,
5120 for VoIP), and it never opens more streams than it advertised in
SETTINGS_MAX_CONCURRENT_STREAMS without noting a violation. Every refusal that
was not programmed by the test is a violation; tests assert there are none.

The wire and the fault modes (drop, stall, GOAWAY, stream reset, delay) are
h2_standin's; a programmed Reply carries them per device token.

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
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers.h2_standin import Answer, Fault, H2StandIn

PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm",
              "location", "liveactivity", "pushtotalk", "controls", "widgets"}
_PATH = re.compile(r"/3/device/([^/]*)")
_HEX = re.compile(r"[0-9a-fA-F]{64,200}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass
class Reply:
    """A programmed answer: Reply(410, "Unregistered", timestamp_ms=...), or a fault:
    Reply(drop=True), Reply(stall=True), Reply(goaway=True), Reply(reset=7)."""

    status: int = 0
    reason: str = ""
    timestamp_ms: int | None = None
    retry_after: str | None = None
    drop: bool = False  # close the connection instead of answering
    stall: bool = False  # never answer
    goaway: bool = False  # refused unprocessed by a GOAWAY below its stream id
    reset: int | None = None  # RST_STREAM with this error code
    delay: float = 0.0  # the (programmed or normal) answer comes this late

    def fault(self) -> Fault | None:
        if self.drop or self.stall or self.goaway or self.reset is not None or self.delay:
            return Fault(self.drop, self.stall, self.goaway, self.reset, self.delay)
        return None


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


class APNsStandIn(H2StandIn):
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
        super().__init__(ssl_context=ssl_context, max_concurrent_streams=max_concurrent_streams,
                         response_delay=response_delay, goaway_after=goaway_after,
                         record=record)
        self.team_id, self.key_id, self.public_key = team_id, key_id, public_key
        self.topics = topics
        self.clock = clock
        self.programs: dict[str, deque[Reply]] = defaultdict(deque)
        self.sticky: dict[str, Reply] = {}
        self.token_topics: dict[str, str] = {}  # token -> bundle it belongs to
        self.expired_jwts: set[str] = set()
        self.requests: list[Request] = []  # processed: checked and answered
        self.jwts: set[str] = set()
        self._handled = asyncio.Event()  # set when a request has been checked and recorded
        self._jwt_cache: dict[str, dict[str, Any]] = {}

    # -- test controls -----------------------------------------------------------

    def program(self, token: str, *replies: Reply) -> None:
        """Answer the next requests for `token` with these replies, in order."""
        self.programs[token].extend(replies)

    def always(self, token: str, reply: Reply) -> None:
        self.sticky[token] = reply

    def expire_current_jwts(self) -> None:
        """Every provider token seen so far is now answered with ExpiredProviderToken."""
        self.expired_jwts |= self.jwts

    def delivered(self, apns_id: str | None = None) -> list[Request]:
        """Requests answered 200 (for one apns-id, when given)."""
        return [r for r in self.requests if r.status == 200
                and (apns_id is None or r.headers.get("apns-id") == apns_id)]

    def on_wire(self, token: str) -> int:
        """How many requests for device `token` arrived, processed or not."""
        return sum(1 for w in self.wire if _device_token(w.headers) == token)

    # -- the wire's callbacks ----------------------------------------------------------

    def fault_for(self, headers: dict[str, str], body: bytes) -> Fault | None:
        token = _device_token(headers)
        program = self.programs.get(token)
        if program:
            fault = program[0].fault()
            if fault is not None and (fault.drop or fault.stall or fault.refuses):
                program.popleft()  # instead of an answer; a delayed one is answered later
            return fault
        reply = self.sticky.get(token)
        return reply.fault() if reply is not None else None

    def answer(self, conn_no: int, stream_id: int, headers: dict[str, str],
               body: bytes) -> Answer:
        status, reason, reply = self.handle(conn_no, stream_id, headers, body)
        response = [("apns-id", headers.get("apns-id", ""))]
        payload = b""
        if status != 200:
            error: dict[str, Any] = {"reason": reason}
            if reply is not None and reply.timestamp_ms is not None:
                error["timestamp"] = reply.timestamp_ms
            payload = json.dumps(error).encode()
            response.append(("content-type", "application/json"))
            if reply is not None and reply.retry_after is not None:
                response.append(("retry-after", reply.retry_after))
        return Answer(status, response, payload)

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
        device_token = _device_token(headers)
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


def _device_token(headers: dict[str, str]) -> str:
    match = _PATH.fullmatch(headers.get(":path", ""))
    return match.group(1) if match else ""
