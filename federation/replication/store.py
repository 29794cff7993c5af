"""Where the replication core keeps records: the `RecordStore` protocol and an in-memory store.

The core merges (merge.py) and then hands the store the winners; the store only stores,
indexes by bucket and keeps the digests (digest.py) in step with what it holds. The daemon's
LMDB store implements the same protocol (one write transaction per `put_many`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from federation.replication.digest import DEFAULT_BUCKETS, TableDigest, TableSummary, bucket_of, entry_hash
from federation.replication.record import Record, record_hash


class RecordStore(Protocol):
    """Records by (table, key), grouped in hash buckets, with per-table digests.

    Contract: `put_many` is atomic (all or nothing, one transaction) and unconditional (the
    caller has already merged); digests always describe exactly the stored records, so two
    stores holding equal records report equal summaries and bucket hashes.
    """

    @property
    def nbuckets(self) -> int:
        """Buckets per table (network-wide constant; anti-entropy refuses a mismatch)."""
        ...

    def get(self, table: str, key: str) -> Record | None:
        """The stored record (live or tombstone), or None."""
        ...

    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Record | None]:
        """`get` for each (table, key), in order (one read transaction in LMDB)."""
        ...

    def put_many(self, puts: Sequence[Record], deletes: Sequence[tuple[str, str]] = ()) -> None:
        """Store `puts` (each replaces any record under its key), then remove `deletes`."""
        ...

    def tables(self) -> list[str]:
        """Names of tables holding at least one record, sorted."""
        ...

    def summary(self, table: str) -> TableSummary:
        """Count and root hash of `table` (an unknown table is empty)."""
        ...

    def bucket_hashes(self, table: str) -> list[bytes]:
        """`nbuckets` 16-byte bucket hashes of `table` (all zero for an unknown table)."""
        ...

    def bucket(self, table: str, index: int) -> list[Record]:
        """Every record of `table` in bucket `index`, sorted by key."""
        ...

    def tombstones(self) -> Iterator[Record]:
        """Every stored tombstone (for garbage collection)."""
        ...


class MemoryStore:
    """A `RecordStore` in dicts: for the simulator, tests and benchmarks."""

    def __init__(self, nbuckets: int = DEFAULT_BUCKETS) -> None:
        TableDigest(nbuckets)  # validates nbuckets
        self._nbuckets = nbuckets
        self._records: dict[str, dict[str, Record]] = {}
        self._entries: dict[tuple[str, str], tuple[int, int]] = {}  # -> (bucket, entry hash)
        self._buckets: dict[str, list[set[str]]] = {}
        self._digests: dict[str, TableDigest] = {}
        self._tombs: set[tuple[str, str]] = set()

    @property
    def nbuckets(self) -> int:
        return self._nbuckets

    def get(self, table: str, key: str) -> Record | None:
        t = self._records.get(table)
        return None if t is None else t.get(key)

    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Record | None]:
        return [self.get(t, k) for t, k in keys]

    def put_many(self, puts: Sequence[Record], deletes: Sequence[tuple[str, str]] = ()) -> None:
        for r in puts:
            self._remove(r.table, r.key)
            t = self._records.get(r.table)
            if t is None:
                t = self._records[r.table] = {}
                self._buckets[r.table] = [set() for _ in range(self._nbuckets)]
                self._digests[r.table] = TableDigest(self._nbuckets)
            b = bucket_of(r.key, self._nbuckets)
            e = entry_hash(record_hash(r))
            t[r.key] = r
            self._entries[(r.table, r.key)] = (b, e)
            self._buckets[r.table][b].add(r.key)
            self._digests[r.table].add(b, e)
            if r.tombstone:
                self._tombs.add((r.table, r.key))
        for table, key in deletes:
            self._remove(table, key)

    def _remove(self, table: str, key: str) -> None:
        old = self._entries.pop((table, key), None)
        if old is None:
            return
        b, e = old
        del self._records[table][key]
        self._buckets[table][b].discard(key)
        self._digests[table].remove(b, e)
        self._tombs.discard((table, key))
        if not self._records[table]:
            del self._records[table], self._buckets[table], self._digests[table]

    def tables(self) -> list[str]:
        return sorted(self._records)

    def summary(self, table: str) -> TableSummary:
        d = self._digests.get(table)
        if d is None:
            d = TableDigest(self._nbuckets)
        return TableSummary(table, d.count, d.root())

    def bucket_hashes(self, table: str) -> list[bytes]:
        d = self._digests.get(table)
        return (d if d is not None else TableDigest(self._nbuckets)).bucket_hashes()

    def bucket(self, table: str, index: int) -> list[Record]:
        if not 0 <= index < self._nbuckets:
            raise ValueError(f"index: must be in 0..{self._nbuckets - 1}, got {index}")
        t = self._records.get(table)
        if t is None:
            return []
        return [t[k] for k in sorted(self._buckets[table][index])]

    def tombstones(self) -> Iterator[Record]:
        for table, key in list(self._tombs):
            yield self._records[table][key]

    # --- conveniences for tests (not part of the protocol) ---------------------------------
    def all_records(self) -> dict[tuple[str, str], Record]:
        """Every stored record by (table, key)."""
        return {(t, k): r for t, recs in self._records.items() for k, r in recs.items()}

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["MemoryStore", "RecordStore"]
