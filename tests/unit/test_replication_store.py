"""The RecordStore contract, run against every implementation we have.

The in-memory store and the minimal raw-LMDB store of bench/merge.py run here; the daemon's
LMDB store should be added to STORES so it is held to the same contract.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Callable, Iterator

import pytest

from federation.replication.digest import bucket_of
from federation.replication.lmdb_store import LmdbRecordStore
from federation.replication.record import Draft, Record, Version, sign_batch
from federation.replication.store import MemoryStore, RecordStore
from storage import Store

NB = 8


def _bench_lmdb_store(path: pathlib.Path) -> RecordStore:
    src = pathlib.Path(__file__).resolve().parents[2] / "bench" / "merge.py"
    spec = importlib.util.spec_from_file_location("bench_merge", src)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    store: RecordStore = mod.LmdbStore(str(path), NB)
    return store


class _DaemonLmdbStore(LmdbRecordStore):
    """The daemon's store, owning its `storage.Store` so the fixture can close it."""

    def __init__(self, path: pathlib.Path) -> None:
        self._env_store = Store.open(path / "store")
        super().__init__(self._env_store, NB)

    def close(self) -> None:
        self._env_store.close()


STORES: dict[str, Callable[[pathlib.Path], RecordStore]] = {
    "memory": lambda _: MemoryStore(NB),
    "bench-lmdb": _bench_lmdb_store,
    "daemon-lmdb": _DaemonLmdbStore,
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[RecordStore]:
    s = STORES[request.param](tmp_path)
    yield s
    close = getattr(s, "close", None)
    if close is not None:
        close()


def rec(table: str, key: str, hlc: int, value: bytes | None = b"v") -> Record:
    d = Draft(table, key, value or b"", Version(hlc=hlc, origin="n1"), value is None)
    return sign_batch([d], lambda m: b"s" * 64)[0]


def test_empty_store(store: RecordStore) -> None:
    assert store.nbuckets == NB
    assert store.get("reg", "x") is None and store.tables() == [] and list(store.tombstones()) == []
    assert store.bucket_hashes("reg") == [b"\0" * 16] * NB and store.bucket("reg", 0) == []
    assert store.summary("reg").count == 0


def test_put_get_replace_delete(store: RecordStore) -> None:
    a1, b1, n1 = rec("reg", "a", 1), rec("reg", "b", 2), rec("nodes", "n1", 3)
    store.put_many([a1, b1, n1])
    assert store.get("reg", "a") == a1 and store.tables() == ["nodes", "reg"]
    assert store.get_many([("reg", "b"), ("reg", "zz"), ("nodes", "n1")]) == [b1, None, n1]
    empty_root = MemoryStore(NB).summary("reg").root
    before = store.summary("reg")
    assert before.count == 2 and before.root != empty_root
    a2 = rec("reg", "a", 5, None)
    store.put_many([a2])
    assert store.get("reg", "a") == a2 and store.summary("reg").count == 2
    assert store.summary("reg").root != before.root
    assert [r.key for r in store.tombstones()] == ["a"]
    store.put_many([], [("reg", "a"), ("reg", "missing")])
    assert store.get("reg", "a") is None and list(store.tombstones()) == []
    store.put_many([], [("reg", "b"), ("nodes", "n1")])
    assert store.tables() == [] and store.summary("reg").root == empty_root


def test_buckets_hold_their_keys_sorted(store: RecordStore) -> None:
    recs = [rec("reg", f"k{i:02d}", i + 1) for i in range(40)]
    store.put_many(recs[::-1])
    seen = []
    for b in range(NB):
        keys = [r.key for r in store.bucket("reg", b)]
        assert keys == sorted(keys) and all(bucket_of(k, NB) == b for k in keys)
        seen += keys
    assert sorted(seen) == [r.key for r in recs]


def test_digests_match_the_in_memory_reference(store: RecordStore) -> None:
    recs = [rec("reg", f"k{i}", i + 1, None if i % 4 == 0 else b"x%d" % i) for i in range(30)]
    ref = MemoryStore(NB)
    ref.put_many(recs)
    for r in recs:
        store.put_many([r])
    assert store.summary("reg") == ref.summary("reg")
    assert store.bucket_hashes("reg") == ref.bucket_hashes("reg")


def test_daemon_lmdb_store_rebuilds_digests_on_reopen(tmp_path: pathlib.Path) -> None:
    s = _DaemonLmdbStore(tmp_path)
    s.put_many([rec("reg", f"k{i}", i + 1) for i in range(50)] + [rec("nodes", "n1", 99, None)])
    s.put_many([], [("reg", "k3")])
    before = (s.tables(), s.summary("reg"), s.bucket_hashes("reg"), sorted(r.key for r in s.tombstones()))
    s.close()
    again = _DaemonLmdbStore(tmp_path)
    try:
        after = (again.tables(), again.summary("reg"), again.bucket_hashes("reg"), sorted(r.key for r in again.tombstones()))
        assert after == before and again.summary("reg").count == 49
        assert again.get("reg", "k3") is None and again.get("reg", "k4") == rec("reg", "k4", 5)
    finally:
        again.close()
