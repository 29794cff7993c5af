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
from federation.consensus.log import HardState, MirroredLog, Snapshot
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


class LmdbRaftStorage(MirroredLog):
    """The durable state of Raft group `group` in `store` (see module docstring)."""

    def __init__(self, store: Store, group: str) -> None:
        if not group or len(group) > _MAX_GROUP or "/" in group:
            raise ValueError(f"group: 1..{_MAX_GROUP} chars without '/', got {group!r}")
        self._store = store
        self._g = group.encode()
        self._ops: list[tuple[str, bytes, Any]] = []  # (table name, key, value or None to delete)
        self.flushes = 0
        self.unflushed = 0
        hard = store.get(META, self._g + b"/hard")
        hs = HardState(hard[0], NodeId(hard[1]) if hard[1] is not None else None) if hard else HardState()
        meta = store.get(META, self._g + b"/snap")
        snap: Snapshot | None = None
        if meta is not None:
            data = store.get(SNAP, self._g + b"/data")
            if data is None:
                raise StorageCorrupt(f"raft group {group}: snapshot metadata without data")
            idx, term, voters, learners = meta
            snap = Snapshot(idx, term, tuple(map(NodeId, voters)), tuple(map(NodeId, learners)), data)
        log = [_row_entry(v) for _, v in store.scan(LOG, self._g + b"/l/")]
        try:
            super().__init__(hs, snap, log)
        except StorageCorrupt as e:
            raise StorageCorrupt(f"raft group {group}: {e}") from None

    def _key(self, index: int) -> bytes:
        return self._g + b"/l/" + struct.pack(">Q", index)

    def _put(self, table: str, key: bytes, value: Any) -> None:
        self._ops.append((table, key, value))
        self.unflushed += 1

    # ----- MirroredLog's writes ------------------------------------------------------------
    def _wrote_hard_state(self, hs: HardState) -> None:
        self._put("meta", self._g + b"/hard", [hs.term, hs.voted_for])

    def _wrote_entries(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            self._put("log", self._key(e.index), _entry_row(e))

    def _dropped(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            self._put("log", self._key(e.index), None)

    def _wrote_snapshot(self, snap: Snapshot) -> None:
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
