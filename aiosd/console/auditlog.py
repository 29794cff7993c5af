"""The audit log's driver: entries queued by the API middleware, written to LMDB in batches,
trimmed by retention, and this node's latest entries published to the `audit` registry table."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

from aiosd.api.auth import Principal
from aiosd.console.audit import (
    MAX_ENTRIES,
    RETENTION_S,
    SUMMARY_ENTRIES,
    AuditEntry,
    entry_key,
    expired,
    make_entry,
    summary_doc,
)
from aiosd.registry.service import RegistryService
from storage import Store, Table, WriteTxn

log = logging.getLogger(__name__)

AUDIT: Table[AuditEntry] = Table.model("console.audit", AuditEntry)
AUDIT_TABLE = "audit"
FLUSH_S = 0.2
PUBLISH_S = 2.0
TRIM_S = 60.0
MAX_PENDING = 10_000


class AuditLog:
    def __init__(self, store: Store, node: str, registry: RegistryService | None, *,
                 max_entries: int = MAX_ENTRIES, retention_s: float = RETENTION_S) -> None:
        self._store = store
        self._node = node
        self._registry = registry
        self._max = max_entries
        self._retention = retention_s
        self._pending: list[AuditEntry] = []
        self._latest: list[AuditEntry] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._last_trim = 0.0
        self.dropped = 0

    async def start(self) -> None:
        rows = await asyncio.to_thread(self._store.scan, AUDIT)
        self._latest = [v for _, v in rows[-SUMMARY_ENTRIES:]]
        self._task = asyncio.create_task(self._run(), name="console-audit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._flush(publish=False)

    def record(self, p: Principal | None, method: str, route: str, path: str, status: int) -> None:
        """Queue one entry (called by the API middleware for every state-changing request)."""
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append(make_entry(
            ts=time.time(), node=self._node, user=p.name if p else "anonymous", role=p.role if p else "-",
            via=p.via if p else "token", method=method, route=route, path=path, status=status))
        self._wake.set()

    async def entries(self) -> list[AuditEntry]:
        await self._flush(publish=False)
        return [v for _, v in await asyncio.to_thread(self._store.scan, AUDIT)]

    async def _run(self) -> None:
        last_pub = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PUBLISH_S)
            self._wake.clear()
            await asyncio.sleep(FLUSH_S)  # batch what comes together
            try:
                await self._flush(publish=time.monotonic() - last_pub >= PUBLISH_S)
            except Exception:
                log.exception("audit flush failed")
            if not self._dirty:
                last_pub = time.monotonic()

    async def _flush(self, *, publish: bool) -> None:
        batch, self._pending = self._pending, []
        if batch:
            now = time.time()
            trim = now - self._last_trim >= TRIM_S
            if trim:
                self._last_trim = now
            keys = [entry_key(e.ts, next(self._seq)) for e in batch]
            await asyncio.to_thread(self._store.update, lambda txn: self._write(txn, keys, batch, now, trim))
            self._latest = (self._latest + batch)[-SUMMARY_ENTRIES:]
            self._dirty = True
        if publish and self._dirty and self._registry is not None:
            self._dirty = False
            await self._registry.put(AUDIT_TABLE, self._node, summary_doc(self._node, self._latest))

    def _write(self, txn: WriteTxn, keys: list[str], batch: list[AuditEntry], now: float, trim: bool) -> None:
        for k, e in zip(keys, batch, strict=True):
            txn.put(AUDIT, k, e)
        if trim or txn.count(AUDIT) > self._max:
            all_keys = [k.decode() for k, _ in txn.scan(AUDIT)]
            for k in expired(all_keys, now=now, max_entries=self._max, retention_s=self._retention):
                txn.delete(AUDIT, k)

    def stats(self) -> dict[str, Any]:
        return {"pending": len(self._pending), "dropped": self.dropped}


__all__ = ["AUDIT", "AUDIT_TABLE", "AuditLog"]
