"""The durable state of one Raft node: `RaftStorage` (hard state, log, snapshot) and an in-memory one.

Contract: every write method takes effect immediately for later reads; it is *durable* once
`flush()` returns. The core calls `flush()` once at the end of every entry point that wrote
(and before applying committed entries), before it hands back any effect, so an implementation
batches one fsync per call. `InMemoryRaftStorage` is the simulator's: the test keeps the object
across a simulated crash, and `unflushed` lets it assert the core never returns with writes
that a crash would lose. Both share `MirroredLog`; the LMDB one (lmdb_log.py) adds the writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from federation.consensus.errors import StorageCorrupt
from federation.consensus.messages import Entry
from federation.sansio import NodeId


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must never forget (Raft §5.2): the newest term seen and its vote in it."""

    term: int = 0
    voted_for: NodeId | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Applied state up to `index` (inclusive), with the membership in force at `index`."""

    index: int
    term: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    data: bytes


class RaftStorage(Protocol):
    """Durable hard state, log and snapshot of one Raft group on one node."""

    def hard_state(self) -> HardState: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def snapshot(self) -> Snapshot | None: ...

    def first_index(self) -> int:
        """Index of the first entry still in the log (snapshot index + 1, or 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when the log is empty; 0 when both are)."""
        ...

    def term_at(self, index: int) -> int | None:
        """Term of entry `index`; the snapshot's term at its index; 0 at index 0; None if unknown."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries in [lo, hi), stopping before `max_bytes` (but at least one if lo < hi)."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries whose first index is `last_index() + 1`."""
        ...

    def truncate_from(self, index: int) -> None:
        """Delete entries with index >= `index` (a follower's conflicting suffix)."""
        ...

    def save_snapshot(self, snap: Snapshot) -> None:
        """Store `snap`; drop entries <= snap.index, and all entries if the log disagrees at snap.index."""
        ...

    def flush(self) -> None:
        """Make every earlier write durable (one fsync); a no-op when nothing was written."""
        ...


class MirroredLog:
    """The Raft log logic both storages share: hard state, snapshot and entries held in memory.

    A subclass makes the writes durable: `_wrote_hard_state`, `_wrote_entries`, `_dropped` and
    `_wrote_snapshot` are called after each change of the mirror, and `flush()` is its own.
    """

    def __init__(self, hs: HardState, snap: Snapshot | None, log: list[Entry]) -> None:
        self._hs = hs
        self._snap = snap
        self._offset = snap.index if snap else 0  # index of the entry before self._log[0]
        self._log = log
        for i, e in enumerate(log):
            if e.index != self._offset + 1 + i:
                raise StorageCorrupt(f"log gap at {self._offset + 1 + i} (found {e.index})")

    # ----- what a subclass stores ----------------------------------------------------------
    def _wrote_hard_state(self, hs: HardState) -> None: ...

    def _wrote_entries(self, entries: Sequence[Entry]) -> None: ...

    def _dropped(self, entries: Sequence[Entry]) -> None: ...

    def _wrote_snapshot(self, snap: Snapshot) -> None: ...

    # ----- RaftStorage -----------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return self._hs

    def set_hard_state(self, hs: HardState) -> None:
        if hs.term < self._hs.term:
            raise StorageCorrupt(f"hard state term would go back from {self._hs.term} to {hs.term}")
        self._hs = hs
        self._wrote_hard_state(hs)

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
        self._wrote_entries(entries)

    def truncate_from(self, index: int) -> None:
        if index <= self._offset:
            raise StorageCorrupt(f"truncate at {index} reaches into the snapshot (index {self._offset})")
        dropped = self._log[index - self._offset - 1 :]
        del self._log[index - self._offset - 1 :]
        self._dropped(dropped)

    def save_snapshot(self, snap: Snapshot) -> None:
        if self._snap is not None and snap.index < self._snap.index:
            raise StorageCorrupt(
                f"snapshot at {snap.index} is older than the stored one at {self._snap.index}"
            )
        keep = self.term_at(snap.index) == snap.term and snap.index <= self.last_index()
        dropped = self._log[: snap.index - self._offset] if keep else self._log
        self._log = self._log[snap.index - self._offset :] if keep else []
        self._offset = snap.index
        self._snap = snap
        self._dropped(dropped)
        self._wrote_snapshot(snap)


class InMemoryRaftStorage(MirroredLog):
    """A RaftStorage in memory; `bootstrap()` seeds the first membership."""

    def __init__(self) -> None:
        super().__init__(HardState(), None, [])
        self.unflushed = 0  # writes since the last flush (a crash would lose them)
        self.flushes = 0
        self.writes = 0

    def _wrote_hard_state(self, hs: HardState) -> None:
        self._dirty()

    def _wrote_entries(self, entries: Sequence[Entry]) -> None:
        self._dirty()

    def _dropped(self, entries: Sequence[Entry]) -> None:
        self._dirty()

    def _wrote_snapshot(self, snap: Snapshot) -> None:
        pass  # counted with the entries it dropped: one write per call, as a single record

    def flush(self) -> None:
        if self.unflushed:
            self.flushes += 1
            self.unflushed = 0

    def _dirty(self) -> None:
        self.unflushed += 1
        self.writes += 1


def bootstrap(storage: RaftStorage, voters: Sequence[NodeId]) -> bool:
    """Seed an empty storage with the first membership (entry 1, term 0); False if not empty.

    Every founding voter bootstraps with the same list, so entry 1 is identical everywhere;
    nodes that join later start empty and receive the log (or a snapshot) from the leader.
    """
    if not voters:
        raise ValueError("voters: must name at least one node")
    if storage.last_index() != 0 or storage.snapshot() is not None:
        return False
    conf = Entry(index=1, term=0, type="conf", voters=tuple(sorted(set(voters))))
    storage.append([conf])
    storage.flush()
    return True


__all__ = ["HardState", "InMemoryRaftStorage", "MirroredLog", "RaftStorage", "Snapshot", "bootstrap"]
