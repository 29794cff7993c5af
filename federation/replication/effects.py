"""What the replication core (gossip.py) hands its driver and its readers: timer keys, the `Changed`
notice, the `Effect` union, the counters, and the retransmit formula."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from federation.replication.errors import RejectReason
from federation.replication.record import Record
from federation.replication.wire import ReplMessage
from federation.sansio import Send, Wake


class TimerKey(StrEnum):
    GOSSIP = "repl.gossip"
    ANTI_ENTROPY = "repl.ae"
    GC = "repl.gc"


@dataclass(frozen=True, slots=True)
class Changed:
    """Notification: the record stored under (table, key) changed (a tombstone = deleted)."""

    table: str
    key: str
    record: Record


Effect = Send[ReplMessage] | Wake | Changed


@dataclass(slots=True)
class ReplicationStats:
    """Counters (monotonic) for metrics and tests."""

    written: int = 0
    merged: int = 0
    duplicates: int = 0
    rejected: dict[RejectReason, int] = field(default_factory=dict)
    deltas_dropped: int = 0
    pushes_sent: int = 0
    push_records_sent: int = 0
    ae_rounds: int = 0
    ae_rounds_answered: int = 0  # digests received: rounds a peer started with us
    ae_records_sent: int = 0
    ae_records_merged: int = 0
    expired_tombstones: int = 0
    tombstones_collected: int = 0
    bad_messages: int = 0

    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def retransmit_limit(n_nodes: int, mult: int) -> int:
    """How many times one delta is pushed: mult * ceil(log10(n + 1)) (memberlist util.go)."""
    return mult * max(1, math.ceil(math.log10(n_nodes + 1)))


__all__ = ["Changed", "Effect", "ReplicationStats", "TimerKey", "retransmit_limit"]
