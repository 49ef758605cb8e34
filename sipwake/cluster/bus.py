"""Events between the nodes of a cluster, over Redis pub/sub (DESIGN "Cluster").

Best effort by design: what must not be lost is in the store; an event only makes
another node act sooner (fork-late, a cache dropped, a limit counted). Events are
batched: one PUBLISH carries what a loop turn produced. Every node says it is alive
every HEARTBEAT seconds; one not heard from for NODE_TIMEOUT is taken for dead (its
connections died with it). While this node is off the bus it can't tell, so it takes
every node for alive; back on the bus, `on_connected` runs (the node re-reads what it
may have missed from the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("sipwake.cluster")

HEARTBEAT = 1.0  # seconds between "alive" events
NODE_TIMEOUT = 4.0  # a node silent this long is dead
RETRY_MIN, RETRY_MAX = 0.2, 5.0  # seconds between reconnection attempts
MAX_BATCH = 500  # events per PUBLISH

Handler = Callable[[str, dict[str, Any]], None]  # (node, data)


class Bus:
    def __init__(
        self,
        url: str,
        channel: str,
        node: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.channel = channel
        self.node = node
        self.clock = clock
        self.handlers: dict[str, list[Handler]] = {}
        self.on_connected: list[Callable[[], None]] = []
        self.seen: dict[str, float] = {}  # node → when last heard
        self.connected_at = 0.0  # 0: off the bus
        self._queue: list[tuple[str, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None

    # ----------------------------------------------------------------- events
    def on(self, kind: str, handler: Handler) -> None:
        self.handlers.setdefault(kind, []).append(handler)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the other nodes (sent within a loop turn when on the bus;
        dropped when off it — the store is the truth)."""
        if not self.connected_at:
            return
        self._queue.append((kind, data))
        self._wake.set()

    def alive(self, node: str) -> bool:
        """Whether `node` is taken to be up. Off the bus, or just back on it, we can't
        tell: every node is."""
        if node == self.node or not node:
            return True
        now = self.clock()
        if not self.connected_at or now - self.connected_at < NODE_TIMEOUT:
            return True
        seen = self.seen.get(node)
        return seen is not None and now - seen < NODE_TIMEOUT

    def settled(self) -> bool:
        """On the bus long enough to know which nodes are alive."""
        return bool(self.connected_at) and self.clock() - self.connected_at >= NODE_TIMEOUT

    def nodes(self) -> list[str]:
        """The nodes heard from lately, this one included."""
        return sorted({self.node, *(n for n in self.seen if self.alive(n))})

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Say goodbye (the others stop routing to us at once), then leave."""
        if self._redis is not None and self.connected_at:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._redis.publish(self.channel, _encode(self.node, [("bye", {})]))
        if self._task is not None:
            self._task.cancel()  # the session closes its connection on the way out
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Connect, listen, publish; reconnect (with backoff) whenever Redis goes."""
        delay = RETRY_MIN
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if self.connected_at:
                    log.warning("cluster bus lost (%s): fork-late across nodes waits", exc)
                    delay = RETRY_MIN
            except Exception:
                log.exception("cluster bus failed")
            self.connected_at = 0.0
            self._queue.clear()
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    async def _session(self) -> None:
        redis = aioredis.from_url(
            self.url, socket_connect_timeout=2.0, socket_timeout=None, health_check_interval=5
        )
        self._redis = redis
        try:
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self.channel)
            self.connected_at = self.clock()
            log.info("cluster bus up (%s as node %s)", self.channel, self.node)
            for callback in self.on_connected:
                try:
                    callback()
                except Exception:
                    log.exception("cluster resync failed")
            self.publish("alive", {})
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listen(pubsub))
                group.create_task(self._send(redis))
                group.create_task(self._heartbeat())
        except* (RedisError, OSError, TimeoutError) as group_exc:
            raise group_exc.exceptions[0] from None
        finally:
            with contextlib.suppress(RedisError, OSError):
                await redis.aclose()

    async def _listen(self, pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                batch = json.loads(message["data"])
                node = str(batch["n"])
                events = batch["e"]
            except (ValueError, KeyError, TypeError):
                log.warning("cluster bus: unreadable event dropped")
                continue
            if node == self.node:
                continue
            self.seen[node] = self.clock()
            for kind, data in events:
                if kind == "bye":
                    self.seen.pop(node, None)
                for handler in self.handlers.get(kind, ()):
                    try:
                        handler(node, data)
                    except Exception:
                        log.exception("cluster event %s from %s failed", kind, node)

    async def _send(self, redis: aioredis.Redis) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await redis.publish(self.channel, _encode(self.node, batch))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            self.publish("alive", {})


def _encode(node: str, events: list[tuple[str, dict[str, Any]]]) -> str:
    return json.dumps({"n": node, "e": events}, separators=(",", ":"))
