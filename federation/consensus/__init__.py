"""Raft consensus per cluster (ARCHITECTURE §3): a sans-IO core, its wire messages and durable-state interface.

The leader of a cluster's Raft group is its controller; drivers and the controller role live
in `aiosd/`. Nothing here does IO.
"""

from federation.consensus.config import RaftConfig
from federation.consensus.errors import (
    Busy,
    ChangeInProgress,
    ConsensusError,
    NoQuorum,
    NotLeader,
    ProposeError,
    RaftDecodeError,
    StorageCorrupt,
    TooLarge,
)
from federation.consensus.events import (
    Committed,
    Effect,
    MembershipChanged,
    RaftStats,
    RaftStatus,
    Role,
    RoleChanged,
    StateMachine,
    TimerKey,
)
from federation.consensus.lmdb_log import LmdbRaftStorage
from federation.consensus.log import HardState, InMemoryRaftStorage, RaftStorage, Snapshot, bootstrap
from federation.consensus.membership import ConfigLog, MemberConfig, plan_change
from federation.consensus.messages import (
    AnyRaftMessage,
    AppendEntries,
    AppendResponse,
    Entry,
    EntryType,
    InstallSnapshot,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)
from federation.consensus.raft import Raft

__all__ = [
    "AnyRaftMessage",
    "AppendEntries",
    "AppendResponse",
    "Busy",
    "ChangeInProgress",
    "Committed",
    "ConfigLog",
    "ConsensusError",
    "Effect",
    "Entry",
    "EntryType",
    "HardState",
    "InMemoryRaftStorage",
    "InstallSnapshot",
    "LmdbRaftStorage",
    "MemberConfig",
    "MembershipChanged",
    "NoQuorum",
    "NotLeader",
    "ProposeError",
    "Raft",
    "RaftConfig",
    "RaftDecodeError",
    "RaftStats",
    "RaftStatus",
    "RaftStorage",
    "Role",
    "RoleChanged",
    "Snapshot",
    "SnapshotResponse",
    "StateMachine",
    "StorageCorrupt",
    "TimerKey",
    "TooLarge",
    "VoteRequest",
    "VoteResponse",
    "bootstrap",
    "decode",
    "encode",
    "plan_change",
]
