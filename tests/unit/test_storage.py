"""storage.Store against a real LMDB in tmp_path."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgpack
import pytest
from pydantic import BaseModel

from storage import CorruptStoreError, SchemaMismatchError, StorageError, Store, StoreLockedError, Table

T = Table.msgpack("things")
OTHER = Table.msgpack("other")


class Rec(BaseModel):
    name: str
    size: int


RECS = Table.model("recs", Rec)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


def test_put_get_delete_roundtrip(store: Store) -> None:
    store.put(T, "a", {"x": 1, "b": b"\x00\x01"})
    assert store.get(T, "a") == {"x": 1, "b": b"\x00\x01"}
    assert store.get(T, "missing") is None
    assert store.delete(T, "a") is True
    assert store.delete(T, "a") is False
    assert store.get(T, "a") is None


def test_tables_are_separate_namespaces(store: Store) -> None:
    store.put(T, "k", 1)
    store.put(OTHER, "k", 2)
    assert (store.get(T, "k"), store.get(OTHER, "k")) == (1, 2)


def test_model_table_validates_on_read(store: Store) -> None:
    store.put(RECS, "r1", Rec(name="n", size=3))
    got = store.get(RECS, "r1")
    assert isinstance(got, Rec) and got.size == 3


def test_scan_by_prefix_is_ordered_and_bounded(store: Store) -> None:
    for k in ["b/2", "a/1", "b/1", "c/1", "b/10"]:
        store.put(T, k, k)
    assert [k for k, _ in store.scan(T, "b/")] == [b"b/1", b"b/10", b"b/2"]
    assert store.scan(T, "zzz") == []
    assert len(store.scan(T)) == 5


def test_batch_commits_all_at_once(store: Store) -> None:
    with store.batch() as b:
        for i in range(100):
            b.put(T, f"k{i:03d}", i)
        b.delete(T, "k000")
        assert store.get(T, "k001") is None  # not visible before the batch ends
    assert store.count(T) == 99


def test_batch_that_raises_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.batch() as b:
        b.put(T, "x", 1)
        raise RuntimeError("boom")
    assert store.get(T, "x") is None


def test_snapshot_is_isolated_from_later_writes(store: Store) -> None:
    store.put(T, "a", 1)
    with store.snapshot() as snap:
        store.put(T, "a", 2)
        store.put(T, "b", 3)
        assert snap.get(T, "a") == 1
        assert snap.get(T, "b") is None
    assert store.get(T, "a") == 2


def test_update_reads_its_own_writes(store: Store) -> None:
    store.put(T, "n", 1)

    def incr(txn):  # type: ignore[no-untyped-def]
        txn.put(T, "n", txn.get(T, "n") + 1)
        return txn.get(T, "n")

    assert store.update(incr) == 2
    assert store.get(T, "n") == 2


def test_map_grows_when_full(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", map_bytes=256 << 10) as s:
        blob = os.urandom(4096)
        with s.batch() as b:
            for i in range(1000):  # ~4 MB into a 256 KB map
                b.put(T, f"{i:05d}", blob)
        for i in range(300):
            s.put(T, f"single{i:04d}", blob)
        assert s.count(T) == 1300
        assert s.stats()["map_bytes"] > 256 << 10
        assert s.get(T, "00999") == blob


def test_bad_keys_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="key must be"):
        store.put(T, "", 1)
    with pytest.raises(ValueError, match="key must be"):
        store.put(T, "x" * 600, 1)


def _hold_lock(path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    s = Store.open(Path(path))
    ready.set()
    done.wait(20)
    s.close()


def test_second_process_is_refused(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path / "db"), ready, done))
    p.start()
    try:
        assert ready.wait(20)
        with pytest.raises(StoreLockedError, match=f"in use by another aiosd process \\(pid {p.pid}\\)"):
            Store.open(tmp_path / "db")
    finally:
        done.set()
        p.join(20)
    Store.open(tmp_path / "db").close()  # free again once the holder is gone


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_foreign_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    (db / "data.mdb").write_bytes(b"this is not lmdb " * 500)
    before = _digest(db)
    with pytest.raises(CorruptStoreError, match="data.mdb is not a usable LMDB store"):
        Store.open(db)
    assert _digest(db) == {**before, **{k: v for k, v in _digest(db).items() if k == "aiosd.lock"}}
    assert not (db / "lock.mdb").exists()


def test_file_where_the_store_dir_should_be(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("oops")
    with pytest.raises(CorruptStoreError, match="should be a directory"):
        Store.open(tmp_path / "db")
    assert (tmp_path / "db").read_text() == "oops"


def test_schema_version_is_checked(tmp_path: Path) -> None:
    Store.open(tmp_path / "db").close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=8)
    meta = env.open_db(b"__meta__")
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", msgpack.packb(99), db=meta)
    env.close()
    with pytest.raises(SchemaMismatchError, match="schema version 99"):
        Store.open(tmp_path / "db")


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        s.put(T, "a", 1)


def test_reserved_table_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        Table.msgpack("__meta__")
