"""The member table: bounded, probed round-robin in shuffled order, long-dead rows reaped.

Holds rows and the bookkeeping around them (probe order, failed members kept for reconnects);
it does not decide state changes (swim.py does).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from federation.membership.config import SwimConfig
from federation.membership.effects import Member
from federation.membership.messages import MemberRecord, MemberState
from federation.sansio import NodeId

_PROBED = (MemberState.ALIVE, MemberState.SUSPECT)
_GONE = (MemberState.DEAD, MemberState.LEFT)


@dataclass(slots=True)
class Row:
    node: NodeId
    addr: str
    state: MemberState
    inc: int
    meta: dict[str, str]
    changed_at: float

    def snapshot(self) -> Member:
        return Member(self.node, self.addr, self.state, self.inc, dict(self.meta))


class MemberTable:
    """Rows by node id (ours included), at most `cfg.max_members`; dead/left rows go first."""

    def __init__(self, me: Row, cfg: SwimConfig, rng: random.Random) -> None:
        self.me = me
        self._cfg = cfg
        self._rng = rng
        self._rows: dict[NodeId, Row] = {me.node: me}
        self._order: list[NodeId] = []  # probe order for this round (SWIM §4.3)
        self._next = 0
        self._failed: dict[NodeId, tuple[str, float]] = {}  # dead members to retry: addr, died at
        self.failed_dropped = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, node: object) -> bool:
        return node in self._rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows.values())

    def get(self, node: NodeId) -> Row | None:
        return self._rows.get(node)

    def snapshot(self) -> list[Member]:
        return [r.snapshot() for r in sorted(self._rows.values(), key=lambda r: r.node)]

    def records(self) -> tuple[MemberRecord, ...]:
        """Every row as push-pull records (already valid: built from validated data)."""
        return tuple(
            MemberRecord.model_construct(
                node=r.node, addr=r.addr, state=r.state.value, inc=r.inc, meta=r.meta
            )
            for r in self._rows.values()
        )

    def peers(self, *states: MemberState, exclude: NodeId | None = None) -> list[NodeId]:
        """Other members in one of `states` (not us, not `exclude`)."""
        return [
            r.node for r in self._rows.values() if r.state in states and r.node not in (self.me.node, exclude)
        ]

    def live_count(self) -> int:
        """Alive or suspect members, us included: the N of the SWIM formulas."""
        return sum(1 for r in self._rows.values() if r.state in _PROBED)

    def add(self, row: Row) -> bool:
        """Insert a new member at a random place in the probe order; False if the table is full."""
        if len(self._rows) >= self._cfg.max_members:
            gone = [r for r in self._rows.values() if r.state in _GONE and r is not self.me]
            if not gone:
                return False
            del self._rows[min(gone, key=lambda r: r.changed_at).node]
        self._rows[row.node] = row
        self._order.insert(self._rng.randint(0, len(self._order)), row.node)
        self._failed.pop(row.node, None)
        return True

    def next_target(self, now: float) -> Row | None:
        """The next alive or suspect member in this round; a new round reaps and reshuffles."""
        for _ in range(2):
            while self._next < len(self._order):
                row = self._rows.get(self._order[self._next])
                self._next += 1
                if row is not None and row is not self.me and row.state in _PROBED:
                    return row
            self._new_round(now)
        return None

    def _new_round(self, now: float) -> None:
        reap = self._cfg.dead_reap_s
        for r in [r for r in self._rows.values() if r.state in _GONE and r is not self.me]:
            if now - r.changed_at > reap:
                del self._rows[r.node]
        self._order = [n for n in self._rows if n != self.me.node]
        self._rng.shuffle(self._order)
        self._next = 0

    # ----- failed members, for reconnect push-pulls ----------------------------------------------
    def mark_failed(self, node: NodeId, addr: str, now: float) -> None:
        self._failed.pop(node, None)
        self._failed[node] = (addr, now)
        if len(self._failed) > self._cfg.max_failed:  # FIFO: the oldest failure goes first
            del self._failed[next(iter(self._failed))]
            self.failed_dropped += 1

    def forget_failed(self, node: NodeId) -> None:
        self._failed.pop(node, None)

    def failed_addr_to_retry(self, now: float) -> str | None:
        """Address of one random failed member still worth retrying (expired ones are dropped)."""
        timeout = self._cfg.reconnect_timeout_s
        for node in [n for n, (_, t) in self._failed.items() if now - t > timeout]:
            del self._failed[node]
        if not self._failed:
            return None
        return self._failed[self._rng.choice(list(self._failed))][0]


__all__ = ["MemberTable", "Row"]
