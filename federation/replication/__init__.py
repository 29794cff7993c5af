"""Gossip-replicated registry CRDT (sans-IO): records, LWW merge, digests, gossip, anti-entropy.

Storage on disk (LMDB), the registries API and the asyncio driver live elsewhere; they use the
`RecordStore` protocol and the `Replicator` core exported here.
"""

from federation.replication.authority import (
    AdminOnly,
    AnyMember,
    Authority,
    LeaderOnly,
    Rule,
    SelfKeyed,
    TableRules,
)
from federation.replication.config import ReplicationConfig
from federation.replication.digest import TableDigest, TableSummary, bucket_of
from federation.replication.errors import (
    ClockDriftError,
    InvalidWrite,
    RejectReason,
    ReplicationError,
    WriteRefused,
)
from federation.replication.gossip import Changed, Effect, ReplicationStats, Replicator, TimerKey
from federation.replication.merge import order_key, supersedes, winner
from federation.replication.record import (
    Draft,
    Proof,
    Record,
    RootCache,
    Signer,
    Verifier,
    Version,
    sign_batch,
)
from federation.replication.store import MemoryStore, RecordStore
from federation.replication.wire import ReplMessage, WireError, decode, encode

__all__ = [
    "AdminOnly",
    "AnyMember",
    "Authority",
    "Changed",
    "ClockDriftError",
    "Draft",
    "Effect",
    "InvalidWrite",
    "LeaderOnly",
    "MemoryStore",
    "Proof",
    "Record",
    "RecordStore",
    "RejectReason",
    "ReplMessage",
    "ReplicationConfig",
    "ReplicationError",
    "ReplicationStats",
    "Replicator",
    "RootCache",
    "Rule",
    "SelfKeyed",
    "Signer",
    "TableDigest",
    "TableRules",
    "TableSummary",
    "TimerKey",
    "Verifier",
    "Version",
    "WireError",
    "WriteRefused",
    "bucket_of",
    "decode",
    "encode",
    "order_key",
    "sign_batch",
    "supersedes",
    "winner",
]
