"""Raft timing and size limits (`RaftConfig`), with `lan()` and `test()` profiles.

Only numbers live here; the core reads them, nothing here does IO. The daemon's Settings tree
hands `settings.raft` to the driver, which builds a RaftConfig from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tunables of one Raft group. Every field is validated in `__post_init__` (ValueError names it)."""

    # A follower that hears nothing from a leader for a random time in [min, max) campaigns.
    # Wider range = fewer split votes, slower failover (Raft §5.2; Consul LAN: 1 s heartbeat timeout).
    election_timeout_min_s: float = 0.5
    election_timeout_max_s: float = 1.0
    # Leader heartbeat to voters; at most half of election_timeout_min_s so one lost heartbeat is harmless.
    # 250 ms, not etcd's 100 ms: each beat is a signed envelope both ways (~1 ms of CPU per exchange on
    # 2 cores), and 100 ms alone cost more than the whole idle budget of 10 daemons (bench/idle_daemons.py);
    # failover is set by the election timeout (a follower times out 0.5-1.0 s after its last beat).
    heartbeat_interval_s: float = 0.25
    # Heartbeat to learners (non-voters). They never campaign and do not count for quorum, so the beat
    # only keeps their leader hint and the leader's "caught up" view fresh; with max_voters=5 a 10-node
    # cluster then beats 4 peers at the voter rate instead of 9 (most of a leader's idle CPU: each beat
    # is a signed envelope both ways). Learners wait this long x2 more before forgetting the leader.
    # Never faster than heartbeat_interval_s (the leader's tick).
    learner_heartbeat_interval_s: float = 1.0
    # Voters per cluster (ARCHITECTURE §3): 5 tolerates 2 failures; more voters = slower commits.
    max_voters: int = 5
    # Members (voters + learners) a config may hold: LAN clusters are 1-100 nodes.
    max_members: int = 256
    # Entries and bytes per AppendEntries: bounds message size and a follower's per-call work.
    max_entries_per_append: int = 256
    max_append_bytes: int = 1 << 20
    # Appends in flight per follower before waiting for acks (pipelining window).
    max_inflight: int = 4
    # One command must fit one append batch.
    max_command_bytes: int = 512 << 10
    # Leader refuses proposals past this many uncommitted entries (bounds a minority leader's log).
    max_uncommitted: int = 8192
    # Take a snapshot after this many applied entries past the last one; lagging followers then
    # get InstallSnapshot instead of the (discarded) prefix.
    snapshot_threshold: int = 4096
    snapshot_chunk_bytes: int = 256 << 10
    # A follower refuses a snapshot larger than this (the receive buffer is peer-fed).
    max_snapshot_bytes: int = 1 << 30
    # Pre-vote (thesis §9.6): a rejoining partitioned node cannot bump terms and depose a leader.
    pre_vote: bool = True
    # Check-quorum: a leader that has not heard from a majority for election_timeout_max_s steps down.
    check_quorum: bool = True
    # A learner is promoted to voter once it is within this many entries of the commit index.
    catchup_slack: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"raft.{f.name}: must be a positive number, got {value!r}")
        if self.election_timeout_max_s <= self.election_timeout_min_s:
            raise ValueError("raft.election_timeout_max_s: must be greater than election_timeout_min_s")
        if self.heartbeat_interval_s * 2 > self.election_timeout_min_s:
            raise ValueError("raft.heartbeat_interval_s: must be at most half of election_timeout_min_s")
        if self.max_voters > self.max_members:
            raise ValueError("raft.max_voters: must not exceed max_members")
        if self.max_command_bytes > self.max_append_bytes:
            raise ValueError("raft.max_command_bytes: must not exceed max_append_bytes")

    @classmethod
    def lan(cls) -> RaftConfig:
        """LAN defaults: leader failover in about one second (election 0.5-1.0 s, heartbeat 250 ms to
        voters, 1 s to learners)."""
        return cls()

    @classmethod
    def test(cls) -> RaftConfig:
        """Small limits so the simulator exercises batching, snapshots and back-off quickly."""
        return cls(
            election_timeout_min_s=0.3,
            election_timeout_max_s=0.6,
            heartbeat_interval_s=0.05,
            max_entries_per_append=8,
            max_append_bytes=4096,
            max_inflight=2,
            max_command_bytes=1024,
            max_uncommitted=256,
            snapshot_threshold=24,
            snapshot_chunk_bytes=64,
            max_snapshot_bytes=1 << 20,
            catchup_slack=8,
        )


__all__ = ["RaftConfig"]
