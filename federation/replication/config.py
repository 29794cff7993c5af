"""Settings of the replication core (the daemon's Settings tree hands this slice in)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from federation.replication.digest import DEFAULT_BUCKETS, MAX_BUCKETS
from federation.replication.wire import MAX_MSG_BYTES


class ReplicationConfig(BaseModel):
    """Timers, fan-out and caps of gossip and anti-entropy; every field says its unit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Serf/memberlist LAN defaults: gossip every 200 ms to 3 random peers.
    gossip_interval_s: float = Field(0.2, gt=0, le=60)
    fanout: int = Field(3, ge=1, le=32)
    # Each delta is sent retransmit_mult * ceil(log10(n + 1)) times (memberlist util.go); more
    # = faster and surer spread, more bandwidth.
    retransmit_mult: int = Field(4, ge=1, le=16)
    # One push message stays under a UDP-sized budget like memberlist's 1,400 B: with the
    # defaults a node never pushes more than 5/s * 3 * 1,400 B = 21 KB/s whatever the load.
    max_push_bytes: int = Field(1400, ge=256, le=1 << 20)
    # Deltas waiting to be pushed; overflow drops the oldest (counted): anti-entropy repairs.
    max_queue: int = Field(4096, ge=1, le=1 << 20)
    # Push-pull anti-entropy with one random peer, jittered +-20%. Lower = faster repair of
    # lost deltas and returning nodes, more digest traffic (~1 KB per round when in sync).
    ae_interval_s: float = Field(5.0, gt=0, le=3600)
    # Caps on one anti-entropy message (entries: ~60 B + key each; records: up to a value each)
    # and on its encoded size: under the p2p transport's 1 MiB envelope cap, with room to spare.
    max_ae_entries_per_msg: int = Field(4096, ge=16, le=65536)
    max_ae_records_per_msg: int = Field(1024, ge=1, le=4096)
    max_ae_msg_bytes: int = Field(512 * 1024, ge=4096, le=MAX_MSG_BYTES // 2)
    # Entries one round lists (in several messages): a node that missed this many records
    # catches up in one round. Bounds the memory and CPU of a round (~200 B per entry while it
    # is built); past it the round covers a random part and the next rounds the rest.
    max_ae_entries_per_round: int = Field(65536, ge=16, le=1 << 20)
    # Hash buckets per table: must be equal on every node of the network.
    buckets: int = Field(DEFAULT_BUCKETS, ge=1, le=MAX_BUCKETS)
    # Refuse records whose HLC is this far ahead of our clock (NTP keeps honest nodes < 1 s).
    max_drift_s: float = Field(60.0, gt=0)
    # Tombstones are kept this long (by their HLC wall time): longer than any partition or
    # downtime we promise to heal, or a node that was away longer could resurrect a record.
    tombstone_grace_s: float = Field(3 * 86400.0, gt=0)
    gc_interval_s: float = Field(60.0, gt=0)
    # Largest value of one record (registries hold specs and summaries, not payloads).
    max_value_bytes: int = Field(64 * 1024, ge=1, le=1 << 20)
    # Largest local write batch (one signature; a proof path of <= 10 hashes).
    max_write_batch: int = Field(1024, ge=1, le=65536)
    # Verified batch roots remembered (one per origin batch; ~130 B each).
    root_cache_entries: int = Field(4096, ge=1, le=1 << 20)

    @classmethod
    def lan(cls) -> Self:
        """Defaults for a LAN network (the values above)."""
        return cls()

    @classmethod
    def test(cls) -> Self:
        """Short timers for the simulator and integration tests."""
        return cls(ae_interval_s=1.0, tombstone_grace_s=30.0, gc_interval_s=2.0, max_drift_s=5.0)


__all__ = ["ReplicationConfig"]
