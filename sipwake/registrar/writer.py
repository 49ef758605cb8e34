"""Binding changes written to the store behind the REGISTER's answer.

The registrar routes from memory; the store only lets bindings survive a restart. So a
REGISTER is answered (and a parked call forked to the new binding) as soon as memory
holds it, and the write follows: in order, coalesced per binding (only its newest state
is written), concurrent across bindings so the store can commit them together. A clean
stop flushes; a crash loses at most the last moments of refreshes, which the phones
repeat anyway. A refresh that moves only the expiry is not even queued while the
stored copy covers half its lifetime (registrar.py `store_write_due`): a crash then
brings the binding back with that copy's expiry. Devices (the push tokens) are not
written here: they are committed before the answer, because nothing else would bring
them back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sipwake.lograte import LogRate
from sipwake.store.base import Store
from sipwake.store.errors import unavailable
from sipwake.store.models import Binding

log = logging.getLogger("sipwake.registrar")


RETRY_FIRST = 0.5  # seconds before writing again while the store is failing
RETRY_MAX = 2.0  # a failed connect is cheap: the writes go in soon after the store is back


class BindingWriter:
    def __init__(
        self,
        store: Store,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.sleep = sleep
        self._outages = LogRate(60.0)
        self._pending: dict[tuple[str, str], Binding | None] = {}  # None: delete
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._writing = 0  # changes taken for the write under way

    def put(self, binding: Binding) -> None:
        self._queue((binding.aor, binding.key), binding)

    def delete(self, aor: str, key: str) -> None:
        self._queue((aor, key), None)

    async def flush(self) -> None:
        """Wait until every change queued so far is in the store."""
        await self._idle.wait()

    def pending(self) -> int:
        """Changes not in the store yet (queued, or being written)."""
        return len(self._pending) + self._writing

    def _queue(self, key: tuple[str, str], binding: Binding | None) -> None:
        self._pending[key] = binding
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay = RETRY_FIRST
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                put = [b for b in batch.values() if b is not None]
                delete = [key for key, b in batch.items() if b is None]
                self._writing = len(batch)
                try:
                    await self.store.write_bindings(put, delete)  # one transaction
                    delay = RETRY_FIRST
                except Exception as exc:
                    outage = unavailable(exc)
                    if outage is None:
                        await self._one_by_one(batch)  # so one bad row costs only itself
                        continue
                    # the store is down or full: keep them all (a newer change queued
                    # meanwhile wins) and write again later
                    self._pending = {**batch, **self._pending}
                    self._writing = 0
                    skipped = self._outages.due(outage.kind)
                    if skipped is not None:
                        log.warning("%d binding changes wait for the store (%s)",
                                    len(self._pending), outage)  # fmt: skip
                    await self.sleep(delay)
                    delay = min(RETRY_MAX, delay * 2)
                finally:
                    self._writing = 0
        finally:
            self._task = None
            self._idle.set()

    async def _one_by_one(self, batch: dict[tuple[str, str], Binding | None]) -> None:
        results = await asyncio.gather(
            *(self._write(key, b) for key, b in batch.items()), return_exceptions=True
        )
        for (aor, key), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                log.error("binding %s of %s not stored: %r", key, aor, result)

    async def _write(self, key: tuple[str, str], binding: Binding | None) -> None:
        if binding is None:
            await self.store.delete_binding(*key)
        else:
            await self.store.put_binding(binding)
