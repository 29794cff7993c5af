"""What the Raft core hands out besides Send/Wake: notifications, status, counters, timer keys.

Also the `StateMachine` protocol the core drives. Plain values; no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from federation.consensus.messages import AnyRaftMessage
from federation.sansio import NodeId, Send, Wake


class Role(StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class TimerKey(StrEnum):
    ELECTION = "raft.election"
    HEARTBEAT = "raft.heartbeat"


@dataclass(frozen=True, slots=True)
class Committed:
    """Notification: command entry `index` committed and was applied to the state machine."""

    index: int
    term: int
    command: bytes


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """Notification: this node's role, term or known leader changed."""

    role: Role
    term: int
    leader: NodeId | None


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """Notification: the config in force changed (appended, truncated away or from a snapshot)."""

    voters: frozenset[NodeId]
    learners: frozenset[NodeId]
    index: int


Effect = Send[AnyRaftMessage] | Wake | Committed | RoleChanged | MembershipChanged


class StateMachine(Protocol):
    """The application the log drives; called synchronously by the core."""

    def apply(self, index: int, command: bytes) -> None: ...

    def snapshot(self) -> bytes:
        """The state after the last applied entry."""
        ...

    def restore(self, index: int, data: bytes) -> None:
        """Replace the state with a snapshot taken at `index`."""
        ...


@dataclass(frozen=True, slots=True)
class RaftStatus:
    role: Role
    term: int
    leader: NodeId | None
    commit_index: int
    last_applied: int
    last_index: int
    voters: frozenset[NodeId]
    learners: frozenset[NodeId]


@dataclass
class RaftStats:
    """Counters (drops are peer-caused and never raise)."""

    dropped_foreign: int = 0  # not a Raft message
    dropped_stale: int = 0  # older term or out-of-date response
    dropped_invalid: int = 0  # well-typed but contradicts the protocol
    elections: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    step_downs_no_quorum: int = 0


__all__ = [
    "Committed",
    "Effect",
    "MembershipChanged",
    "RaftStats",
    "RaftStatus",
    "Role",
    "RoleChanged",
    "StateMachine",
    "TimerKey",
]
