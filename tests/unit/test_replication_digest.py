"""Digests and the in-memory store: incremental buckets equal a recomputation, any order."""

from __future__ import annotations

import random

import pytest

from federation.replication.digest import TableDigest, bucket_of, differing, entry_hash
from federation.replication.record import Draft, Record, Version, record_hash, sign_batch
from federation.replication.store import MemoryStore


def recs(n: int, seed: int, hlc0: int = 1) -> list[Record]:
    rng = random.Random(seed)
    ds = [
        Draft(
            "reg" if i % 3 else "nodes",
            f"k{i}",
            rng.randbytes(4),
            Version(hlc=hlc0 + i, origin="n1"),
            i % 7 == 0,
        )
        for i in range(n)
    ]
    return sign_batch(
        [Draft(x.table, x.key, b"" if x.tombstone else x.value, x.version, x.tombstone) for x in ds], sig
    )


def sig(m: bytes) -> bytes:
    return b"\x01" * 64


def recomputed(store: MemoryStore, table: str) -> list[bytes]:
    d = TableDigest(store.nbuckets)
    for b in range(store.nbuckets):
        for r in store.bucket(table, b):
            d.add(b, entry_hash(record_hash(r)))
    return d.bucket_hashes()


def test_same_records_in_any_order_give_equal_digests() -> None:
    rs = recs(300, 1)
    a, b = MemoryStore(32), MemoryStore(32)
    a.put_many(rs)
    shuffled = rs[:]
    random.Random(2).shuffle(shuffled)
    for r in shuffled:
        b.put_many([r])
    assert a.tables() == b.tables() == ["nodes", "reg"]
    for t in a.tables():
        assert a.summary(t) == b.summary(t)
        assert a.bucket_hashes(t) == b.bucket_hashes(t) == recomputed(a, t)


def test_replace_and_delete_update_digests_incrementally() -> None:
    s = MemoryStore(16)
    s.put_many(recs(50, 3))
    before = s.summary("reg")
    newer = recs(50, 4, hlc0=1000)  # same keys, newer versions
    s.put_many(newer)
    assert s.summary("reg") != before and s.bucket_hashes("reg") == recomputed(s, "reg")
    assert s.get("reg", "k1") == newer[1]
    s.put_many([], [("reg", "k1"), ("reg", "nope")])
    assert s.get("reg", "k1") is None and s.bucket_hashes("reg") == recomputed(s, "reg")
    assert s.summary("reg").count == len([r for r in newer if r.table == "reg"]) - 1


def test_empty_table_equals_unknown_table_and_vanishes() -> None:
    s = MemoryStore(8)
    empty = s.summary("reg")
    s.put_many(recs(3, 5)[1:2])
    (r,) = [x for x in s.all_records().values()]
    s.put_many([], [(r.table, r.key)])
    assert s.tables() == [] and s.summary(r.table).root == empty.root and len(s) == 0


def test_tombstones_are_listed_until_replaced() -> None:
    s = MemoryStore()
    rs = recs(30, 6)
    s.put_many(rs)
    assert {(r.table, r.key) for r in s.tombstones()} == {(r.table, r.key) for r in rs if r.tombstone}
    live = sign_batch([Draft("nodes", "k0", b"back", Version(hlc=99999, origin="n1"), False)], sig)
    s.put_many(live)
    assert ("nodes", "k0") not in {(r.table, r.key) for r in s.tombstones()}


def test_bucket_of_is_stable_and_spreads() -> None:
    assert bucket_of("node-1", 64) == bucket_of("node-1", 64)
    counts = [0] * 16
    for i in range(1600):
        counts[bucket_of(f"key{i}", 16)] += 1
    assert min(counts) > 60 and max(counts) < 140


def test_differing_and_bad_sizes() -> None:
    assert differing([b"a", b"b", b"c"], [b"a", b"x", b"c"]) == [1]
    with pytest.raises(ValueError, match="expected 3 buckets"):
        differing([b"a", b"b", b"c"], [b"a"])
    with pytest.raises(ValueError, match="nbuckets"):
        TableDigest(0)
    with pytest.raises(ValueError, match="index"):
        MemoryStore(4).bucket("reg", 4)
