"""A strict local stand-in for Google's OAuth token endpoint and FCM HTTP v1.

Token endpoint (HTTP/1.1, aiohttp, its own port): a jwt-bearer grant whose
assertion must be signed (RS256) with the test service account's key, with the
right kid, iss, aud (Google's token endpoint or ours), scope and lifetime. It
issues opaque access tokens with `expires_in`. Faults: `stall_tokens()` (requests
hang until `release_tokens()`), `fail_tokens(status)`.

Send endpoint (HTTP/2 like fcm.googleapis.com, on h2_standin, with its fault modes
programmed per registration token): bearer must be an issued, unexpired token; the
project in the path must be ours; the message must have a token, string-only `data`
within 4096 UTF-8 bytes of keys plus values, no reserved keys, a valid
android.priority (HIGH for every sipwake type) and ttl. Refusals the test did not
program are violations; tests assert there are none.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import ssl
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers.h2_standin import Answer, Fault, H2StandIn

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth always addresses its assertion to Google's token endpoint, whichever
# token_uri it posts it to; Google accepts that audience.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_TTL = re.compile(r"\d+(\.\d{1,9})?s")
_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
HIGH_TYPES = {"call", "call_cancelled", "missed_call", "message", "voicemail"}

# Error bodies as FCM v1 sends them (google.rpc.Status with FcmError details).
ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT",
                         "The registration token is not a valid FCM registration token"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric"),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push"),
}


@dataclass
class FCMReply:
    """A programmed answer (`code`, a key of ERRORS), or a fault: FCMReply(drop=True),
    FCMReply(stall=True), FCMReply(goaway=True), FCMReply(reset=7)."""

    code: str = ""
    retry_after: str | None = None
    drop: bool = False  # cut the connection once the request arrived
    stall: bool = False  # never answer
    goaway: bool = False  # refused unprocessed by a GOAWAY below its stream id
    reset: int | None = None  # RST_STREAM with this error code
    delay: float = 0.0

    def fault(self) -> Fault | None:
        if self.drop or self.stall or self.goaway or self.reset is not None or self.delay:
            return Fault(self.drop, self.stall, self.goaway, self.reset, self.delay)
        return None


@dataclass
class Send:
    project: str
    bearer: str
    body: dict[str, Any]
    status: int = 0

    @property
    def message(self) -> dict[str, Any]:
        return self.body.get("message", {})  # type: ignore[no-any-return]


class FCMStandIn(H2StandIn):
    def __init__(
        self,
        *,
        project_id: str,
        client_email: str,
        key_id: str,
        public_key: rsa.RSAPublicKey,
        expires_in: int = 3600,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,  # call deadlines (token expiry is real time)
        **options: Any,
    ) -> None:
        super().__init__(ssl_context=ssl_context, **options)
        self.project_id = project_id
        self.client_email = client_email
        self.key_id = key_id
        self.public_key = public_key
        self.expires_in = expires_in
        self.clock = clock
        self.programs: dict[str, deque[FCMReply]] = defaultdict(deque)
        self.sticky: dict[str, FCMReply] = {}
        self.issued: dict[str, float] = {}  # access token -> expiry (real time)
        self.token_requests = 0
        self.tokens_answered = 0
        self.sends: list[Send] = []  # processed requests, in order
        self.token_port = 0
        self._runner: web.AppRunner | None = None
        self._token_gate: asyncio.Event | None = None  # set: token requests stall
        self._token_failures: deque[int] = deque()
        self._token_handled = asyncio.Event()

    @property
    def token_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.token_port}/token"

    def program(self, token: str, *replies: FCMReply) -> None:
        self.programs[token].extend(replies)

    def always(self, token: str, reply: FCMReply) -> None:
        self.sticky[token] = reply

    def revoke_all(self) -> None:
        self.issued.clear()

    def stall_tokens(self) -> None:
        """Token requests from now on hang (the client's socket waits) until released."""
        if self._token_gate is None:
            self._token_gate = asyncio.Event()

    def release_tokens(self) -> None:
        if self._token_gate is not None:
            self._token_gate.set()
            self._token_gate = None

    def fail_tokens(self, *statuses: int) -> None:
        """The next token requests get these HTTP statuses (e.g. 503, 500, 400)."""
        self._token_failures.extend(statuses)

    def delivered(self, token: str | None = None) -> list[Send]:
        return [s for s in self.sends if s.status == 200
                and (token is None or s.message.get("token") == token)]

    def on_wire(self, token: str) -> int:
        """How many send requests for registration `token` arrived, processed or not."""
        return sum(1 for w in self.wire if _message_token(w.body) == token)

    async def wait_token_requests(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while self.token_requests < count:
                self._token_handled.clear()
                await self._token_handled.wait()

    async def start(self) -> FCMStandIn:
        await super().start()
        app = web.Application()
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.token_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def close(self) -> None:
        self.release_tokens()
        await super().close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- OAuth token endpoint ------------------------------------------------------

    def _oauth_error(self, why: str) -> web.Response:
        self.violations.append(f"token endpoint: {why}")
        return web.json_response({"error": "invalid_grant", "error_description": why}, status=400)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self._token_handled.set()
        gate = self._token_gate
        if gate is not None:
            await gate.wait()
        if self._token_failures:
            status = self._token_failures.popleft()
            error = "invalid_grant" if status == 400 else "internal_failure"
            return web.json_response({"error": error, "error_description": "programmed"},
                                     status=status)
        if request.content_type != "application/x-www-form-urlencoded":
            return self._oauth_error(f"content type {request.content_type}")
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return self._oauth_error(f"grant_type {form.get('grant_type')!r}")
        assertion = str(form.get("assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS256"],
                                audience=[GOOGLE_TOKEN_AUDIENCE, self.token_url],
                                issuer=self.client_email,
                                options={"require": ["iat", "exp", "aud", "iss"]})
        except jwt.PyJWTError as exc:
            return self._oauth_error(f"assertion: {exc}")
        if header.get("kid") != self.key_id:
            return self._oauth_error("wrong kid")
        if SCOPE not in str(claims.get("scope", "")).split():
            return self._oauth_error(f"scope {claims.get('scope')!r}")
        if not 0 < claims["exp"] - claims["iat"] <= 3600:
            return self._oauth_error("assertion lifetime over an hour")
        access = "ya29." + secrets.token_urlsafe(24)
        self.issued[access] = time.time() + self.expires_in
        self.tokens_answered += 1
        return web.json_response(
            {"access_token": access, "expires_in": self.expires_in, "token_type": "Bearer"})

    # -- FCM send (HTTP/2) ---------------------------------------------------------

    def fault_for(self, headers: dict[str, str], body: bytes) -> Fault | None:
        token = _message_token(body)
        program = self.programs.get(token)
        if program:
            fault = program[0].fault()
            if fault is not None and (fault.drop or fault.stall or fault.refuses):
                program.popleft()
            return fault
        reply = self.sticky.get(token)
        return reply.fault() if reply is not None else None

    def _error(self, code: str, *, violation: str = "", field: str = "",
               retry_after: str | None = None) -> Answer:
        if violation:
            self.violations.append(violation)
        status, api_status, message = ERRORS.get(code, (400, "INVALID_ARGUMENT", code))
        details: list[dict[str, Any]] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
        if field:
            details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                            "fieldViolations": [{"field": field, "description": violation}]})
        if code == "INVALID_ARGUMENT" and field != "message.token":
            message = "Request contains an invalid argument."
        headers = [("content-type", "application/json; charset=UTF-8")]
        if retry_after:
            headers.append(("retry-after", retry_after))
        return Answer(status, headers, json.dumps(
            {"error": {"code": status, "message": message, "status": api_status,
                       "details": details}}).encode())

    def answer(self, conn_no: int, stream_id: int, headers: dict[str, str],
               body: bytes) -> Answer:
        match = _SEND_PATH.fullmatch(headers.get(":path", ""))
        if headers.get(":method") != "POST" or match is None:
            self.violations.append(f"{headers.get(':method')} {headers.get(':path')}")
            return Answer(404, [("content-type", "text/plain")], b"Not Found")
        auth = headers.get("authorization", "")
        bearer = auth[7:] if auth.startswith("Bearer ") else ""
        if self.issued.get(bearer, 0) < time.time():
            return Answer(401, [("content-type", "application/json")], json.dumps(
                {"error": {"code": 401, "status": "UNAUTHENTICATED",
                           "message": "Request had invalid authentication credentials."}}
            ).encode())
        project = match.group(1)
        if project != self.project_id:
            self.violations.append(f"project {project!r}")
            return Answer(403, [("content-type", "application/json")], json.dumps(
                {"error": {"code": 403, "status": "PERMISSION_DENIED",
                           "message": "Permission denied"}}).encode())
        try:
            parsed = json.loads(body)
        except ValueError:
            return self._error("INVALID_ARGUMENT", violation="body is not JSON")
        if not headers.get("content-type", "").startswith("application/json"):
            self.violations.append(f"content-type {headers.get('content-type')!r}")
        send = Send(project, bearer, parsed if isinstance(parsed, dict) else {})
        self.sends.append(send)
        response = self._check(parsed)
        send.status = response.status
        return response

    def _check(self, body: Any) -> Answer:
        if not isinstance(body, dict) or set(body) - {"message", "validate_only"}:
            return self._error("INVALID_ARGUMENT", violation="unknown top-level field")
        message = body.get("message")
        if not isinstance(message, dict):
            return self._error("INVALID_ARGUMENT", violation="no message")
        targets = [k for k in ("token", "topic", "condition") if k in message]
        if targets != ["token"] or not isinstance(message["token"], str) or not message["token"]:
            return self._error("INVALID_ARGUMENT", violation="message needs exactly one token",
                               field="message.token")
        token = message["token"]
        data = message.get("data", {})
        if not isinstance(data, dict):
            return self._error("INVALID_ARGUMENT", violation="data is not a map")
        for key, value in data.items():
            if not isinstance(value, str):
                return self._error("INVALID_ARGUMENT", field=f"message.data[{key}]",
                                   violation=f"data value {key}={value!r} is not a string")
            if key in ("from", "notification", "message_type") or key.startswith(("google", "gcm")):
                return self._error("INVALID_ARGUMENT", violation=f"reserved data key {key!r}")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
        if size > 4096:
            return self._error("INVALID_ARGUMENT", violation=f"data is {size} bytes > 4096")
        android = message.get("android", {})
        priority = android.get("priority")
        if priority not in (None, "HIGH", "NORMAL"):
            return self._error("INVALID_ARGUMENT", violation=f"android.priority {priority!r}")
        if data.get("type") in HIGH_TYPES and priority != "HIGH":
            self.violations.append(f"{data.get('type')} push without HIGH priority")
        ttl = android.get("ttl")
        if ttl is not None and not (isinstance(ttl, str) and _TTL.fullmatch(ttl)):
            return self._error("INVALID_ARGUMENT", violation=f"android.ttl {ttl!r}")
        if data.get("type") == "call":
            left = int(data.get("expires_at", "0")) - self.clock()
            if ttl is None or float(ttl[:-1]) > left + 1:
                self.violations.append(f"call push ttl {ttl} outlives the park ({left:.0f}s)")
        program = self.programs.get(token)
        reply = program.popleft() if program else self.sticky.get(token)
        if reply is not None and reply.code:  # a delay alone is answered normally
            field_name = "message.token" if reply.code == "INVALID_ARGUMENT" else ""
            return self._error(reply.code, field=field_name, retry_after=reply.retry_after)
        name = f"projects/{self.project_id}/messages/0:{secrets.token_hex(8)}"
        return Answer(200, [("content-type", "application/json; charset=UTF-8")],
                      json.dumps({"name": name}).encode())


def _message_token(body: bytes) -> str:
    try:
        token = json.loads(body).get("message", {}).get("token", "")
    except (ValueError, AttributeError):
        return ""
    return token if isinstance(token, str) else ""
