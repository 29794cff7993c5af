"""The node's one LMDB environment: open/lock/schema, typed get/put/delete/scan, batches, snapshots.

Durability: every write transaction is fsynced before it returns (LMDB `sync=True`), so a
write that returned survives `kill -9`. Batches put many writes in one transaction (one fsync).
Blocking: every method here does disk IO; async callers go through `asyncio.to_thread`.
The map grows by itself (doubling) when a write hits MDB_MAP_FULL.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import lmdb
import msgpack

from storage.errors import (
    CorruptStoreError,
    DiskFullError,
    OutOfFilesError,
    SchemaMismatchError,
    StorageError,
    StoreLockedError,
)
from storage.tables import Table, encode_key

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SCHEMA_VERSION = 1
_META = b"__meta__"
_SCHEMA_KEY = b"schema_version"
# 64 MiB to start: LMDB reserves address space, not disk; the file grows with the data.
INITIAL_MAP_BYTES = 64 << 20
# The map doubles when full, up to this (a node's records are small; blobs live in files).
MAX_MAP_BYTES = 64 << 30
# What LMDB (or the OS under it) says when a write finds no room, and when files run out.
_NO_ROOM = ("No space left on device", "Disk quota exceeded", "Input/output error")
_NO_FILES = ("Too many open files",)
# Named sub-databases: registries, raft log, metrics, blobs index... 128 leaves headroom.
MAX_TABLES = 128
LOCK_FILE = "aiosd.lock"


class _ReadersGate:
    """Lets many read transactions run, but makes a map resize wait until none is open.

    LMDB requires that no transaction of this process is active during `set_mapsize`.
    `enter`/`leave` are plain methods (not a context manager) because `get` is hot.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._resizing = False

    def enter(self) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1

    def leave(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0 and self._resizing:
                self._cond.notify_all()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class ReadTxn:
    """A consistent read snapshot: every get/scan sees the same committed state."""

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        self._store = store
        self._txn = txn

    def _handle(self, table: Table[Any]) -> Any:
        # Every table on disk is opened by Store.open, so a table this process has not
        # opened yet did not exist when the snapshot began: it reads as empty.
        return self._store._dbs.get(table.name)

    def get(self, table: Table[T], key: str | bytes) -> T | None:
        db = self._handle(table)
        raw = None if db is None else self._txn.get(encode_key(key), db=db)
        return None if raw is None else table.decode(bytes(raw))

    def scan(self, table: Table[T], prefix: str | bytes = b"") -> Iterator[tuple[bytes, T]]:
        """Yield `(key, value)` for keys starting with `prefix`, in key order."""
        pre = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        db = self._handle(table)
        if db is None:
            return
        cur = self._txn.cursor(db=db)
        if not cur.set_range(pre):
            return
        for k, v in cur:
            key = bytes(k)
            if not key.startswith(pre):
                return
            yield key, table.decode(bytes(v))

    def count(self, table: Table[Any]) -> int:
        db = self._handle(table)
        return 0 if db is None else int(self._txn.stat(db)["entries"])


class WriteTxn(ReadTxn):
    """One write transaction: reads see its own writes; all of it commits or none."""

    def _handle(self, table: Table[Any]) -> Any:
        # Inside a write transaction a new table must be opened by this very transaction:
        # a second write transaction in the same thread would wait for ours forever.
        return self._store._db(table, self._txn)

    def put(self, table: Table[T], key: str | bytes, value: T) -> None:
        self._txn.put(encode_key(key), table.encode(value), db=self._handle(table))

    def delete(self, table: Table[Any], key: str | bytes) -> bool:
        return bool(self._txn.delete(encode_key(key), db=self._handle(table)))


class Store:
    """One LMDB environment per node, held exclusively by one process.

    Raises (from `open`): StoreLockedError, SchemaMismatchError, CorruptStoreError, StorageError.
    """

    def __init__(self, path: Path, env: lmdb.Environment, lock_fd: int, max_map_bytes: int = MAX_MAP_BYTES) -> None:
        self.path = path
        self.max_map_bytes = max_map_bytes
        self._env = env
        self._lock_fd = lock_fd
        self._dbs: dict[str, Any] = {}
        self._write_lock = threading.Lock()
        self._opened_in_txn: list[str] = []
        self._gate = _ReadersGate()
        self._closed = False

    # ----- lifecycle --------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, map_bytes: int = INITIAL_MAP_BYTES, max_map_bytes: int = MAX_MAP_BYTES) -> Store:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise CorruptStoreError(f"{path} should be a directory holding the LMDB store, but it is a file")
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except PermissionError as e:
            raise StorageError(f"cannot create the store directory {path}: permission denied") from e
        lock_fd = _lock_dir(path)
        try:
            env = _open_env(path, map_bytes)
        except BaseException:
            os.close(lock_fd)
            raise
        store = cls(path, env, lock_fd, max(map_bytes, max_map_bytes))
        try:
            store._check_schema()
            store._open_existing_tables()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Flush and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._write_lock, self._gate.exclusive():
            self._env.sync(True)
            self._env.close()
        os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- reads ------------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator[ReadTxn]:
        with self._gate.reading(), self._env.begin(buffers=False) as txn:
            yield ReadTxn(self, txn)

    def get(self, table: Table[T], key: str | bytes) -> T | None:
        db = self._dbs.get(table.name) or self._db(table)
        k = encode_key(key)
        gate = self._gate
        gate.enter()
        try:
            txn = self._env.begin(db=db)
            try:
                raw = txn.get(k)
            finally:
                txn.abort()
        finally:
            gate.leave()
        return None if raw is None else table.decode(raw)

    def scan(self, table: Table[T], prefix: str | bytes = b"") -> list[tuple[bytes, T]]:
        """All `(key, value)` pairs whose key starts with `prefix`, read from one snapshot."""
        with self.snapshot() as snap:
            return list(snap.scan(table, prefix))

    def count(self, table: Table[Any]) -> int:
        with self.snapshot() as snap:
            return snap.count(table)

    # ----- writes -----------------------------------------------------------------------
    def put(self, table: Table[T], key: str | bytes, value: T) -> None:
        k, v = encode_key(key), table.encode(value)
        db = self._db(table)
        self._write(lambda txn: txn.put(k, v, db=db))

    def delete(self, table: Table[Any], key: str | bytes) -> bool:
        k = encode_key(key)
        db = self._db(table)
        return bool(self._write(lambda txn: txn.delete(k, db=db)))

    def update(self, fn: Callable[[WriteTxn], R]) -> R:
        """Run `fn` inside one write transaction and commit; `fn` may read and write.

        `fn` may be called more than once (after a map resize), so it must not have side
        effects outside the transaction.
        """
        return self._write(lambda txn: fn(WriteTxn(self, txn)))

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        """Collect puts/deletes and commit them in one transaction (one fsync) on exit."""
        b = Batch()
        yield b
        if b.ops:
            self.update(b.apply)

    def _write(self, fn: Callable[[lmdb.Transaction], R]) -> R:
        if self._closed:
            raise StorageError("the store is closed")
        with self._write_lock:
            while True:
                self._opened_in_txn.clear()
                try:
                    with self._env.begin(write=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    self._forget_opened()
                    self._grow()
                except lmdb.Error as e:
                    self._forget_opened()
                    typed = self._classified(e)
                    if typed is None:
                        raise
                    raise typed from e
                except BaseException:
                    self._forget_opened()
                    raise
                finally:
                    self._opened_in_txn.clear()

    def _forget_opened(self) -> None:
        # LMDB closes handles opened by a transaction that aborts.
        for name in self._opened_in_txn:
            self._dbs.pop(name, None)

    def _grow(self) -> None:
        """Double the map. Raises: DiskFullError at max_map_bytes or when the OS refuses."""
        size = self._env.info()["map_size"]
        if size >= self.max_map_bytes:
            raise DiskFullError(f"the store under {self.path.parent} reached its map limit of {size >> 20} MiB; "
                                "delete records or raise the limit")
        new_size = min(size * 2, self.max_map_bytes)
        try:
            with self._gate.exclusive():
                self._env.set_mapsize(new_size)
        except lmdb.Error as e:
            raise DiskFullError(f"the store under {self.path.parent} cannot grow its map to {new_size >> 20} MiB "
                                f"({_lmdb_reason(e)})") from e
        log.info("store map grown", extra={"map_bytes": new_size})

    def _classified(self, e: lmdb.Error) -> StorageError | None:
        """A failed write as a typed error (no room: disk full; no file descriptors), else None."""
        reason = _lmdb_reason(e)
        if isinstance(e, lmdb.DiskError) or any(r in reason for r in _NO_ROOM):
            return DiskFullError(f"disk full under {self.path.parent} ({reason}); the write was not stored")
        if any(r in reason for r in _NO_FILES):
            return OutOfFilesError(f"too many open files ({reason}); the write was not stored")
        return None

    # ----- internals --------------------------------------------------------------------
    def _db(self, table: Table[Any], write_txn: lmdb.Transaction | None = None) -> Any:
        db = self._dbs.get(table.name)
        if db is not None:
            return db
        if self._closed:
            raise StorageError("the store is closed")
        if write_txn is not None:  # we already hold the write lock
            db = self._env.open_db(table.name.encode(), txn=write_txn, create=True)
            self._opened_in_txn.append(table.name)
        else:
            with self._write_lock:
                db = self._dbs.get(table.name)
                if db is None:
                    db = self._env.open_db(table.name.encode(), create=True)
        self._dbs[table.name] = db
        return db

    def _open_existing_tables(self) -> None:
        with self._env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        for name in names:
            if name != _META:
                self._dbs[name.decode()] = self._env.open_db(name, create=False)

    def _check_schema(self) -> None:
        meta = self._env.open_db(_META, create=True)
        with self._env.begin(write=True) as txn:
            raw = txn.get(_SCHEMA_KEY, db=meta)
            if raw is None:
                txn.put(_SCHEMA_KEY, msgpack.packb(SCHEMA_VERSION), db=meta)
                return
            found = msgpack.unpackb(raw)
        if found != SCHEMA_VERSION:
            raise SchemaMismatchError(
                f"the store at {self.path} has schema version {found}, but this aiosd understands "
                f"version {SCHEMA_VERSION}; use the aiosd release that wrote it"
            )

    def stats(self) -> dict[str, int]:
        info = self._env.info()
        return {"map_bytes": int(info["map_size"]), "last_txnid": int(info["last_txnid"])}


class Batch:
    """Writes recorded now and applied in one transaction when the `with` block ends."""

    def __init__(self) -> None:
        self.ops: list[tuple[Table[Any], bytes, Any, bool]] = []

    def put(self, table: Table[T], key: str | bytes, value: T) -> None:
        self.ops.append((table, encode_key(key), value, False))

    def delete(self, table: Table[Any], key: str | bytes) -> None:
        self.ops.append((table, encode_key(key), None, True))

    def apply(self, txn: WriteTxn) -> None:
        for table, key, value, is_delete in self.ops:
            if is_delete:
                txn.delete(table, key)
            else:
                txn.put(table, key, value)


def _lock_dir(path: Path) -> int:
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError as e:
        raise StorageError(f"cannot open {lock_path}: permission denied") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise StoreLockedError(
                f"the data dir {path.parent} is in use by another aiosd process (pid {holder}); "
                "stop it first or pick another --data-dir"
            ) from e
        raise StorageError(f"cannot lock {lock_path}: {e.strerror}") from e
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _open_env(path: Path, map_bytes: int) -> lmdb.Environment:
    data = path / "data.mdb"
    if data.exists():
        # Validate read-only and without the lock file first, so a foreign or damaged file is
        # reported without writing anything next to it.
        try:
            lmdb.open(str(path), readonly=True, lock=False, max_dbs=MAX_TABLES).close()
        except lmdb.Error as e:
            raise CorruptStoreError(
                f"{data} is not a usable LMDB store ({_lmdb_reason(e)}); move it away or pick another --data-dir"
            ) from e
    try:
        return lmdb.open(
            str(path), map_size=map_bytes, max_dbs=MAX_TABLES, subdir=True, sync=True, metasync=True,
            readahead=False, max_readers=256,
        )
    except lmdb.Error as e:
        raise CorruptStoreError(f"cannot open the LMDB store at {path} ({_lmdb_reason(e)})") from e


def _lmdb_reason(e: lmdb.Error) -> str:
    text = str(e)
    return text.split(": ", 1)[1] if ": " in text else text


__all__ = ["SCHEMA_VERSION", "Batch", "ReadTxn", "Store", "WriteTxn"]
