"""The metric history's driver: every 10 s this node's current metrics go to LMDB (both tiers),
expired buckets are deleted in the same transaction, and range queries read one snapshot.

The 10 s tier (6 h: 2,160 rows of N numbers) is also kept decoded in memory, loaded from LMDB on
first use and appended after each commit, so the console's most common query (the last hours at
full resolution) reads no LMDB and decodes no msgpack: 40 metrics, 6 h went from ~230 ms to a few ms
(docs/performance.md "Console"). LMDB stays what survives a restart."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Callable

import msgpack

from aiosd.console.history import FINE, TIERS, Downsampler, Query, Tier, aggregate
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
        # The fine tier, decoded: bucket starts (sorted) and their values; None until first used.
        self._lock = threading.Lock()  # add() and query() run in worker threads
        self._fine_t: list[int] | None = None
        self._fine_v: list[dict[str, float]] = []

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.to_thread(self.preload)  # in the background: the first query is fast too
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
        with self._lock:
            self._store.update(lambda txn: self._write(txn, ts, records))
            if self._fine_t is not None:
                self._remember(ts, [(b, v) for tier, b, v in records if tier is FINE])
        self.samples += 1

    def _remember(self, ts: float, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Mirror a committed write in the in-memory fine tier (same keep rule as _write)."""
        assert self._fine_t is not None
        for bucket, values in rows:
            i = bisect.bisect_left(self._fine_t, bucket)
            if i < len(self._fine_t) and self._fine_t[i] == bucket:
                self._fine_v[i] = values  # a second sample in the same bucket replaces the first
            else:
                self._fine_t.insert(i, bucket)
                self._fine_v.insert(i, values)
        cut = bisect.bisect_left(self._fine_t, FINE.bucket(ts - FINE.keep_s))
        if cut:
            del self._fine_t[:cut], self._fine_v[:cut]

    def preload(self) -> None:
        """Load the fine tier into memory now (blocking: LMDB); queries do it on first use otherwise."""
        with self._lock:
            if self._fine_t is None:
                self._load_fine()

    def _load_fine(self) -> None:
        t: list[int] = []
        v: list[dict[str, float]] = []
        for bucket, values in self._scan(FINE, b"", b"\xff"):
            t.append(bucket)
            v.append(values)
        self._fine_t, self._fine_v = t, v

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
        """The points of `q` (blocking: LMDB for the coarse tier, memory for the fine one)."""
        tier = q.tier
        lo, hi = tier.key(tier.bucket(q.start)).encode(), tier.key(q.end).encode()
        if tier is not FINE:
            return aggregate(q, self._scan(tier, lo, hi))
        with self._lock:
            if self._fine_t is None:
                self._load_fine()
            assert self._fine_t is not None
            i = bisect.bisect_left(self._fine_t, tier.bucket(q.start))
            j = bisect.bisect_left(self._fine_t, q.end)
            rows = list(zip(self._fine_t[i:j], self._fine_v[i:j], strict=True))
        return aggregate(q, rows)

    def _scan(self, tier: Tier, lo: bytes, hi: bytes) -> list[tuple[int, dict[str, float]]]:
        rows: list[tuple[int, dict[str, float]]] = []
        with self._store.snapshot() as snap:
            for k, raw in snap.scan(HISTORY, f"{tier.name}/"):
                if k < lo:
                    continue
                if k >= hi:
                    break
                rows.append((int(k.split(b"/", 1)[1]), msgpack.unpackb(raw, raw=False)))
        return rows


__all__ = ["HISTORY", "HistoryLog"]
