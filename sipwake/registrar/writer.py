"""Binding changes written to the store behind the REGISTER's answer.

The registrar routes from memory; the store only lets bindings survive a restart. So a
REGISTER is answered (and a parked call forked to the new binding) as soon as memory
holds it, and the write follows: in order, coalesced per binding (only its newest state
is written), concurrent across bindings so the store can commit them together. A clean
stop flushes; a crash loses at most the last moments of refreshes, which the phones
repeat anyway. Devices (the push tokens) are not written here: they are committed before
the answer, because nothing else would bring them back.
"""

from __future__ import annotations

import asyncio
import logging

from sipwake.store.base import Store
from sipwake.store.models import Binding

log = logging.getLogger("sipwake.registrar")


class BindingWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[tuple[str, str], Binding | None] = {}  # None: delete
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def put(self, binding: Binding) -> None:
        self._queue((binding.aor, binding.key), binding)

    def delete(self, aor: str, key: str) -> None:
        self._queue((aor, key), None)

    async def flush(self) -> None:
        """Wait until every change queued so far is in the store."""
        await self._idle.wait()

    def pending(self) -> int:
        return len(self._pending)

    def _queue(self, key: tuple[str, str], binding: Binding | None) -> None:
        self._pending[key] = binding
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                put = [b for b in batch.values() if b is not None]
                delete = [key for key, b in batch.items() if b is None]
                try:
                    await self.store.write_bindings(put, delete)  # one transaction
                except Exception:
                    await self._one_by_one(batch)  # so one bad row costs only itself
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
