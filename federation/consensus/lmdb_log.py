"""`LmdbRaftStorage`: a RaftStorage in the node's LMDB store, one fsync per `flush()`.

Writes go to an in-memory mirror at once and to LMDB as one write transaction in `flush()`;
reads come from the mirror, loaded at open (the log is bounded by snapshot_threshold plus
max_uncommitted, so it fits in memory). Several Raft groups may share a store: every key
starts with the group name. `flush()` blocks on disk IO: a driver runs the core off the loop.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from federation.consensus.errors import StorageCorrupt
from federation.consensus.log import HardState, Snapshot
from federation.consensus.messages import Entry
from federation.sansio import NodeId
from storage import Store, Table, WriteTxn

LOG = Table.msgpack(
    "raft_log"
)  # <group>/l/<index: 8 bytes big-endian> -> [index, term, type, data, voters, learners]
META = Table.msgpack("raft_meta")  # <group>/hard -> [term, voted_for]; <group>/snap -> snapshot metadata
SNAP = Table.raw("raft_snap")  # <group>/data -> snapshot bytes
_MAX_GROUP = 64


def _entry_row(e: Entry) -> list[Any]:
    return [e.index, e.term, e.type, e.data, list(e.voters), list(e.learners)]


def _row_entry(row: Any) -> Entry:
    index, term, typ, data, voters, learners = row
    return Entry(
        index=index, term=term, type=typ, data=bytes(data), voters=tuple(voters), learners=tuple(learners)
    )


class LmdbRaftStorage:
    """The durable state of Raft group `group` in `store` (see module docstring)."""

    def __init__(self, store: Store, group: str) -> None:
        if not group or len(group) > _MAX_GROUP or "/" in group:
            raise ValueError(f"group: 1..{_MAX_GROUP} chars without '/', got {group!r}")
        self._store = store
        self._g = group.encode()
        self._ops: list[tuple[str, bytes, Any]] = []  # ("put"|"del", table name, key, value)
        self.flushes = 0
        self.unflushed = 0
        hard = store.get(META, self._g + b"/hard")
        self._hs = (
            HardState(hard[0], NodeId(hard[1]) if hard[1] is not None else None) if hard else HardState()
        )
        meta = store.get(META, self._g + b"/snap")
        self._snap: Snapshot | None = None
        if meta is not None:
            data = store.get(SNAP, self._g + b"/data")
            if data is None:
                raise StorageCorrupt(f"raft group {group}: snapshot metadata without data")
            idx, term, voters, learners = meta
            self._snap = Snapshot(idx, term, tuple(map(NodeId, voters)), tuple(map(NodeId, learners)), data)
        self._offset = self._snap.index if self._snap else 0
        rows = store.scan(LOG, self._g + b"/l/")
        self._log = [_row_entry(v) for _, v in rows]
        for i, e in enumerate(self._log):
            if e.index != self._offset + 1 + i:
                raise StorageCorrupt(
                    f"raft group {group}: log gap at {self._offset + 1 + i} (found {e.index})"
                )

    def _key(self, index: int) -> bytes:
        return self._g + b"/l/" + struct.pack(">Q", index)

    def _put(self, table: str, key: bytes, value: Any) -> None:
        self._ops.append((table, key, value))
        self.unflushed += 1

    # ----- RaftStorage ------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return self._hs

    def set_hard_state(self, hs: HardState) -> None:
        if hs.term < self._hs.term:
            raise StorageCorrupt(f"hard state term would go back from {self._hs.term} to {hs.term}")
        self._hs = hs
        self._put("meta", self._g + b"/hard", [hs.term, hs.voted_for])

    def snapshot(self) -> Snapshot | None:
        return self._snap

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._offset + len(self._log)

    def term_at(self, index: int) -> int | None:
        if index == 0:
            return 0
        if self._snap is not None and index == self._snap.index:
            return self._snap.term
        pos = index - self._offset - 1
        return self._log[pos].term if 0 <= pos < len(self._log) else None

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo <= self._offset or hi > self.last_index() + 1:
            raise StorageCorrupt(
                f"entries [{lo}, {hi}) outside the log [{self.first_index()}, {self.last_index()}]"
            )
        out: list[Entry] = []
        size = 0
        for e in self._log[lo - self._offset - 1 : hi - self._offset - 1]:
            size += e.size()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        if entries[0].index != self.last_index() + 1:
            raise StorageCorrupt(f"append at {entries[0].index} leaves a gap after {self.last_index()}")
        self._log.extend(entries)
        for e in entries:
            self._put("log", self._key(e.index), _entry_row(e))

    def truncate_from(self, index: int) -> None:
        if index <= self._offset:
            raise StorageCorrupt(f"truncate at {index} reaches into the snapshot (index {self._offset})")
        for e in self._log[index - self._offset - 1 :]:
            self._put("log", self._key(e.index), None)
        del self._log[index - self._offset - 1 :]

    def save_snapshot(self, snap: Snapshot) -> None:
        if self._snap is not None and snap.index < self._snap.index:
            raise StorageCorrupt(
                f"snapshot at {snap.index} is older than the stored one at {self._snap.index}"
            )
        keep = self.term_at(snap.index) == snap.term and snap.index <= self.last_index()
        drop = self._log[: snap.index - self._offset] if keep else self._log
        for e in drop:
            self._put("log", self._key(e.index), None)
        self._log = self._log[snap.index - self._offset :] if keep else []
        self._offset = snap.index
        self._snap = snap
        self._put("meta", self._g + b"/snap", [snap.index, snap.term, list(snap.voters), list(snap.learners)])
        self._put("snap", self._g + b"/data", snap.data)

    def flush(self) -> None:
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        tables = {"log": LOG, "meta": META, "snap": SNAP}

        def write(txn: WriteTxn) -> None:
            for name, key, value in ops:
                if value is None:
                    txn.delete(tables[name], key)
                else:
                    txn.put(tables[name], key, value)

        self._store.update(write)  # one transaction: one fsync
        self.flushes += 1
        self.unflushed = 0


__all__ = ["LmdbRaftStorage"]
