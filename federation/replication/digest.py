"""Per-table digests: hash buckets over (key, version), updated incrementally.

A key falls in bucket `bucket_of(key)`; a bucket's hash is the XOR of its entries' 128-bit
hashes (the first 16 bytes of the record's leaf hash, which covers key, version, tombstone and
value), so put/replace/delete update it in O(1). The table root hashes the bucket vector, so
two nodes compare a whole table with one 16-byte value, then only the buckets that differ.
This module stores nothing but the digest; records live in a RecordStore.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ENTRY_BYTES = 16
# 64 buckets: 1 KiB of bucket hashes per differing table, and ~150 keys per bucket at 10k records.
DEFAULT_BUCKETS = 64
MAX_BUCKETS = 4096


def bucket_of(key: str, nbuckets: int) -> int:
    """The bucket of `key` (stable across nodes and versions: a hash of the key alone)."""
    h = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") % nbuckets


def entry_hash(record_hash: bytes) -> int:
    """The digest entry of a record, from its 32-byte leaf hash."""
    return int.from_bytes(record_hash[:ENTRY_BYTES], "big")


@dataclass(frozen=True, slots=True)
class TableSummary:
    """What anti-entropy compares first: record count and root hash of one table."""

    table: str
    count: int
    root: bytes


class TableDigest:
    """The bucket hashes of one table; O(1) per change, root recomputed lazily."""

    __slots__ = ("_buckets", "_count", "_root", "nbuckets")

    def __init__(self, nbuckets: int = DEFAULT_BUCKETS) -> None:
        if not 1 <= nbuckets <= MAX_BUCKETS:
            raise ValueError(f"nbuckets: must be in 1..{MAX_BUCKETS}, got {nbuckets}")
        self.nbuckets = nbuckets
        self._buckets = [0] * nbuckets
        self._count = 0
        self._root: bytes | None = None

    def add(self, bucket: int, entry: int) -> None:
        """Account for a record now stored in `bucket`."""
        self._buckets[bucket] ^= entry
        self._count += 1
        self._root = None

    def remove(self, bucket: int, entry: int) -> None:
        """Account for a record no longer stored (deleted or replaced)."""
        self._buckets[bucket] ^= entry
        self._count -= 1
        self._root = None

    @property
    def count(self) -> int:
        return self._count

    def bucket_hashes(self) -> list[bytes]:
        """The bucket vector as 16-byte values (what `AeBuckets` carries)."""
        return [b.to_bytes(ENTRY_BYTES, "big") for b in self._buckets]

    def root(self) -> bytes:
        """One 16-byte hash of the bucket vector."""
        if self._root is None:
            self._root = hashlib.blake2b(b"".join(self.bucket_hashes()), digest_size=ENTRY_BYTES).digest()
        return self._root


def differing(mine: list[bytes], theirs: list[bytes]) -> list[int]:
    """Indices of buckets whose hashes differ (vectors of equal length)."""
    if len(mine) != len(theirs):
        raise ValueError(f"theirs: expected {len(mine)} buckets, got {len(theirs)}")
    return [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]


__all__ = [
    "DEFAULT_BUCKETS",
    "ENTRY_BYTES",
    "MAX_BUCKETS",
    "TableDigest",
    "TableSummary",
    "bucket_of",
    "differing",
    "entry_hash",
]
