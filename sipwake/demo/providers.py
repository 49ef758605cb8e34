"""Apple's and Google's push services as the demo's simulated phones see them.

One local HTTP/2 server (cleartext, prior knowledge: the providers' `allow_insecure`
mode) answers both APNs (`POST /3/device/<token>`) and FCM HTTP v1
(`POST /v1/projects/<project>/messages:send`) as they do when a push is accepted, and
hands each push to whoever waits for that device token. FCM's OAuth token endpoint is
a small aiohttp app beside it. Nothing is checked beyond what the demo shows: this is
a stand-in for a demonstration, not the strict ones the tests use.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from aiohttp import web


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    provider: str  # "apns" | "fcm"
    token: str
    headers: dict[str, str]
    payload: dict[str, Any]  # APNs: the JSON body; FCM: message.data
    at: float  # time.monotonic() when it arrived

    @property
    def kind(self) -> str:
        return str(self.payload.get("type", ""))


@dataclass
class PushStandIn:
    """Where the demo's pushes land, by device token."""

    received: list[ReceivedPush] = field(default_factory=list)
    port: int = 0
    token_port: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)  # replaced on each push
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.token_port}/token"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _H2Server(self), "127.0.0.1", 0)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_post("/token", _oauth_token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        for sock in getattr(site._server, "sockets", None) or ():
            self.token_port = sock.getsockname()[1]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def next_push(self, token: str, kind: str, after: int = 0) -> ReceivedPush:
        """The first push of `kind` to `token` among those received from index `after`
        (the caller bounds the wait)."""
        while True:
            for push in self.received[after:]:
                if push.token == token and push.kind == kind:
                    return push
            await self._arrived.wait()

    def pushes(self, token: str, kind: str) -> list[ReceivedPush]:
        return [p for p in self.received if p.token == token and p.kind == kind]

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]],
                                                                     bytes]:
        """As the provider answers an accepted push: APNs 200 + apns-id, FCM 200 + name."""
        path = headers.get(":path", "")
        if not headers.get("authorization", "").lower().startswith("bearer "):
            return 403, [], b'{"reason":"MissingProviderToken"}'
        if path.startswith("/3/device/"):
            push = ReceivedPush("apns", path.rsplit("/", 1)[1], headers, json.loads(body),
                                time.monotonic())
            apns_id = headers.get("apns-id") or secrets.token_hex(16)
            self._arrive(push)
            return 200, [("apns-id", apns_id)], b""
        if path.endswith("/messages:send"):
            message = json.loads(body)["message"]
            push = ReceivedPush("fcm", message["token"], headers, dict(message.get("data", {})),
                                time.monotonic())
            self._arrive(push)
            name = f"{path.split('/messages:send')[0][4:]}/messages/{secrets.token_hex(8)}"
            return 200, [("content-type", "application/json")], json.dumps({"name": name}).encode()
        return 404, [], b""

    def _arrive(self, push: ReceivedPush) -> None:
        self.received.append(push)
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()  # every waiter looks again


async def _oauth_token(request: web.Request) -> web.Response:
    """Google's token endpoint, for the service account's signed assertion."""
    await request.read()
    return web.json_response({"access_token": "demo-" + secrets.token_urlsafe(24),
                              "expires_in": 3600, "token_type": "Bearer"})


class _H2Server(asyncio.Protocol):
    def __init__(self, owner: PushStandIn) -> None:
        self.owner = owner
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                headers = {str(k): str(v) for k, v in event.headers or ()}
                self.streams[event.stream_id] = (headers, bytearray())
            elif isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                self.streams[event.stream_id][1].extend(event.data or b"")
                self.conn.acknowledge_received_data(event.flow_controlled_length or 0,
                                                    event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                self._answer(event.stream_id)
        self.transport.write(self.conn.data_to_send())

    def _answer(self, stream_id: int) -> None:
        headers, body = self.streams.pop(stream_id)
        try:
            status, extra, reply = self.owner.answer(headers, bytes(body))
        except (ValueError, KeyError):
            status, extra, reply = 400, [], b'{"reason":"BadRequest"}'
        self.conn.send_headers(stream_id, [(":status", str(status)), *extra],
                               end_stream=not reply)
        if reply:
            self.conn.send_data(stream_id, reply, end_stream=True)
