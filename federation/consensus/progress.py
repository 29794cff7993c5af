"""What a leader knows about each follower's log (`Progress`) and the quorum formulas.

Flow control follows etcd's raft: PROBE sends one append and waits; REPLICATE pipelines up to
`max_inflight` appends; SNAPSHOT streams one snapshot chunk at a time. No IO here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class ProgressMode(StrEnum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    """Leader-side replication state of one peer (mutable, owned by the Raft core)."""

    next: int
    match: int = 0
    mode: ProgressMode = ProgressMode.PROBE
    # (last index covered, sent at) of unacknowledged appends, oldest first; len <= max_inflight.
    inflight: deque[tuple[int, float]] = field(default_factory=deque)
    last_ack_at: float = 0.0
    # When the last AppendEntries went out: an idle peer is beaten only once its interval has passed.
    last_sent_at: float = float("-inf")
    commit_sent: int = 0  # highest leader_commit sent to this peer
    snap_index: int = 0
    snap_offset: int = 0
    snap_sent_at: float = 0.0

    def to_probe(self, next_index: int) -> None:
        self.mode = ProgressMode.PROBE
        self.next = max(next_index, self.match + 1)
        self.inflight.clear()

    def acked(self, match_index: int) -> None:
        """A successful append response covering entries up to `match_index`."""
        self.match = max(self.match, match_index)
        self.next = max(self.next, self.match + 1)
        while self.inflight and self.inflight[0][0] <= match_index:
            self.inflight.popleft()
        if self.mode is ProgressMode.PROBE and self.match >= self.next - 1:
            self.mode = ProgressMode.REPLICATE
            self.inflight.clear()


def majority(n_voters: int) -> int:
    """Votes needed among `n_voters` (Raft §5.2)."""
    return n_voters // 2 + 1


def quorum_index(matches: Iterable[int], n_voters: int) -> int:
    """Highest index stored on a majority of voters, given each voter's match index."""
    ordered = sorted(matches, reverse=True)
    need = majority(n_voters)
    return ordered[need - 1] if len(ordered) >= need else 0


__all__ = ["Progress", "ProgressMode", "majority", "quorum_index"]
