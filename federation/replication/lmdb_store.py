"""The daemon's `RecordStore`: replicated records inside the node's one LMDB environment.

Layout: one sub-database `repl_records`, key = table `\\0` bucket (2 bytes, big endian) key,
value = msgpack of the record. Keys of one bucket are adjacent, so `bucket()` is one range scan.
Digests are rebuilt in memory on open (one scan) and kept in step after each commit.
`put_many` is one write transaction (`Store.update`): all or nothing, one fsync.
Every method does disk IO: async callers go through `asyncio.to_thread`. Not thread-safe: the
driver (federation/replication_driver.py) lets one call at a time in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from federation.replication.digest import DEFAULT_BUCKETS, TableDigest, TableSummary, bucket_of, entry_hash
from federation.replication.record import Record, record_hash
from storage import Store
from storage.store import WriteTxn
from storage.tables import Table

RECORDS = Table.raw("repl_records")


def _encode(r: Record) -> bytes:
    out: bytes = msgpack.packb(r.model_dump(mode="python"), use_bin_type=True)
    return out


def _decode(raw: bytes) -> Record:
    return Record.model_validate(msgpack.unpackb(raw, raw=False, use_list=False))


class LmdbRecordStore:
    """A `RecordStore` on `storage.Store`; see the module docstring."""

    def __init__(self, store: Store, nbuckets: int = DEFAULT_BUCKETS) -> None:
        TableDigest(nbuckets)  # validates nbuckets
        self._store = store
        self._nb = nbuckets
        self._digests: dict[str, TableDigest] = {}
        self._entries: dict[tuple[str, str], int] = {}
        self._tombs: set[tuple[str, str]] = set()
        self._rebuild()

    def _rebuild(self) -> None:
        with self._store.snapshot() as snap:
            for _, raw in snap.scan(RECORDS):
                r = _decode(raw)
                self._account(r)

    def _k(self, table: str, key: str) -> bytes:
        return table.encode() + b"\0" + bucket_of(key, self._nb).to_bytes(2, "big") + key.encode()

    def _account(self, r: Record) -> None:
        k = (r.table, r.key)
        self._forget(r.table, r.key)
        e = entry_hash(record_hash(r))
        d = self._digests.get(r.table)
        if d is None:
            d = self._digests[r.table] = TableDigest(self._nb)
        d.add(bucket_of(r.key, self._nb), e)
        self._entries[k] = e
        if r.tombstone:
            self._tombs.add(k)

    def _forget(self, table: str, key: str) -> None:
        old = self._entries.pop((table, key), None)
        if old is None:
            return
        d = self._digests[table]
        d.remove(bucket_of(key, self._nb), old)
        self._tombs.discard((table, key))
        if d.count == 0:
            del self._digests[table]

    @property
    def nbuckets(self) -> int:
        return self._nb

    def get(self, table: str, key: str) -> Record | None:
        raw = self._store.get(RECORDS, self._k(table, key))
        return None if raw is None else _decode(raw)

    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Record | None]:
        with self._store.snapshot() as snap:
            raws = [snap.get(RECORDS, self._k(t, k)) for t, k in keys]
        return [None if raw is None else _decode(raw) for raw in raws]

    def put_many(self, puts: Sequence[Record], deletes: Sequence[tuple[str, str]] = ()) -> None:
        ops = [(self._k(r.table, r.key), _encode(r)) for r in puts]
        dels = [self._k(t, k) for t, k in deletes]

        def txn(w: WriteTxn) -> None:
            for k, v in ops:
                w.put(RECORDS, k, v)
            for k in dels:
                w.delete(RECORDS, k)

        if ops or dels:
            self._store.update(txn)
        for r in puts:
            self._account(r)
        for t, k in deletes:
            self._forget(t, k)

    def tables(self) -> list[str]:
        return sorted(self._digests)

    def summary(self, table: str) -> TableSummary:
        d = self._digests.get(table) or TableDigest(self._nb)
        return TableSummary(table, d.count, d.root())

    def bucket_hashes(self, table: str) -> list[bytes]:
        return (self._digests.get(table) or TableDigest(self._nb)).bucket_hashes()

    def bucket(self, table: str, index: int) -> list[Record]:
        if not 0 <= index < self._nb:
            raise ValueError(f"index: must be in 0..{self._nb - 1}, got {index}")
        prefix = table.encode() + b"\0" + index.to_bytes(2, "big")
        rows = self._store.scan(RECORDS, prefix)
        return sorted((_decode(v) for _, v in rows), key=lambda r: r.key)

    def scan_table(self, table: str) -> list[Record]:
        """Every record of `table` (live and tombstones), sorted by key."""
        rows = self._store.scan(RECORDS, table.encode() + b"\0")
        return sorted((_decode(v) for _, v in rows), key=lambda r: r.key)

    def tombstones(self) -> Iterator[Record]:
        keys = list(self._tombs)
        for r in self.get_many(keys):
            if r is not None and r.tombstone:
                yield r

    def count(self, table: str) -> int:
        d = self._digests.get(table)
        return 0 if d is None else d.count

    def describe(self) -> dict[str, Any]:
        """Per-table counts and roots (hex), for the API and tests."""
        return {t: {"count": d.count, "root": d.root().hex()} for t, d in sorted(self._digests.items())}


__all__ = ["RECORDS", "LmdbRecordStore"]
