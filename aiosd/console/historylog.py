"""The metric history's driver: every 10 s this node's current metrics go to LMDB (both tiers),
expired buckets are deleted in the same transaction, and range queries read one snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgpack

from aiosd.console.history import TIERS, Downsampler, Query, Tier, aggregate
from storage import Store, Table, WriteTxn

log = logging.getLogger(__name__)

HISTORY: Table[bytes] = Table.raw("console.history")
INTERVAL_S = 10.0


class HistoryLog:
    def __init__(self, store: Store, current: Callable[[], dict[str, float] | None], *,
                 interval_s: float = INTERVAL_S) -> None:
        self._store = store
        self._current = current
        self._interval = interval_s
        self._down = Downsampler()
        self._task: asyncio.Task[None] | None = None
        self.samples = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            values = self._current()
            if values:
                try:
                    await asyncio.to_thread(self.add, time.time(), values)
                except Exception:
                    log.exception("metric history write failed")
            await asyncio.sleep(self._interval)

    def add(self, ts: float, values: dict[str, float]) -> None:
        """Record one sample taken at `ts` (blocking: LMDB)."""
        records = self._down.add(ts, values)
        self._store.update(lambda txn: self._write(txn, ts, records))
        self.samples += 1

    def _write(self, txn: WriteTxn, ts: float, records: list[tuple[Tier, int, dict[str, float]]]) -> None:
        for tier, bucket, values in records:
            txn.put(HISTORY, tier.key(bucket), msgpack.packb(values, use_bin_type=True))
        for tier in TIERS:
            cutoff = tier.key(tier.bucket(ts - tier.keep_s)).encode()
            old = []
            for k, _ in txn.scan(HISTORY, f"{tier.name}/"):
                if k >= cutoff:
                    break
                old.append(k)
            for k in old:
                txn.delete(HISTORY, k)

    def query(self, q: Query) -> dict[str, object]:
        """The points of `q` (blocking: LMDB)."""
        tier = q.tier
        lo, hi = tier.key(tier.bucket(q.start)).encode(), tier.key(q.end).encode()
        rows: list[tuple[int, dict[str, float]]] = []
        with self._store.snapshot() as snap:
            for k, raw in snap.scan(HISTORY, f"{tier.name}/"):
                if k < lo:
                    continue
                if k >= hi:
                    break
                rows.append((int(k.split(b"/", 1)[1]), msgpack.unpackb(raw, raw=False)))
        return aggregate(q, rows)


__all__ = ["HISTORY", "HistoryLog"]
