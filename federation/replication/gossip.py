"""The replication core (sans-IO): local writes, push gossip of deltas, anti-entropy, GC.

Each gossip round pushes recent deltas to `fanout` random peers; each anti-entropy round runs a
push-pull exchange with one random peer (table roots -> differing buckets -> entries of those
buckets -> only the differing records, both ways). Every incoming record is checked (shape,
authority, clock drift, origin signature) before merge; a rejected record is counted and never
stored or forwarded. The core does no IO and reads no clock: `now` and an RNG come in. Its effects,
counters and timer keys live in effects.py.
"""

from __future__ import annotations

import logging
import random
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from federation.replication import antientropy as ae
from federation.replication import hlc as hlcmod
from federation.replication.authority import Authority
from federation.replication.config import ReplicationConfig
from federation.replication.digest import TableDigest
from federation.replication.effects import Changed, Effect, ReplicationStats, TimerKey, retransmit_limit
from federation.replication.errors import InvalidWrite, RejectReason, WriteRefused
from federation.replication.merge import supersedes
from federation.replication.record import (
    MAX_KEY_CHARS,
    TABLE_PATTERN,
    Draft,
    Record,
    RootCache,
    Signer,
    Verifier,
    Version,
    proof_root,
    record_hash,
    sign_batch,
    wire_size,
)
from federation.replication.store import RecordStore
from federation.replication.wire import (
    MAX_ENTRIES_PER_MSG,
    AeBuckets,
    AeDigest,
    AeEntries,
    AeRecords,
    KeyRef,
    Push,
    ReplMessage,
)
from federation.sansio import NodeId, Send, Wake

log = logging.getLogger(__name__)

_TABLE_RE = re.compile(TABLE_PATTERN)


class _Delta:
    __slots__ = ("record", "sent")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.sent = 0


class Replicator:
    """Gossip-replicated LWW registry of one node; see the module docstring."""

    def __init__(
        self,
        self_id: NodeId,
        config: ReplicationConfig,
        store: RecordStore,
        signer: Signer,
        verifier: Verifier,
        authority: Authority,
        rng: random.Random,
        *,
        wall_offset_s: float = 0.0,
    ) -> None:
        """`wall_offset_s` maps the monotonic `now` the driver passes to wall-clock seconds
        (the daemon passes time.time() - time.monotonic() taken once at start)."""
        if store.nbuckets != config.buckets:
            raise ValueError(f"store.nbuckets: {store.nbuckets} != config.buckets {config.buckets}")
        self.self_id = self_id
        self.config = config
        self.store = store
        self.stats = ReplicationStats()
        self._signer = signer
        self._authority = authority
        self._rng = rng
        self._wall_offset_s = wall_offset_s
        self._roots = RootCache(verifier, config.root_cache_entries)
        self._hlc = 0
        self._peers: list[NodeId] = []
        self._queue: OrderedDict[tuple[str, str], _Delta] = OrderedDict()
        self._empty_root = TableDigest(config.buckets).root()
        self._warned: set[RejectReason] = set()

    # ----- inputs -----------------------------------------------------------------------
    def start(self, now: float) -> list[Effect]:
        """Arm the timers (random phase, so nodes do not gossip in lockstep)."""
        c = self.config
        return [
            Wake(now + self._rng.uniform(0, c.gossip_interval_s), TimerKey.GOSSIP),
            Wake(now + self._rng.uniform(0.1, 1.0) * c.ae_interval_s, TimerKey.ANTI_ENTROPY),
            Wake(now + c.gc_interval_s, TimerKey.GC),
        ]

    def set_peers(self, now: float, alive: Iterable[NodeId]) -> list[Effect]:
        """Replace the peer set (membership's alive view). A node that had no peers and now
        has some (it just joined or came back) starts anti-entropy at once."""
        was_alone = not self._peers
        self._peers = sorted(set(alive) - {self.self_id})
        if was_alone and self._peers:
            return [Wake(now, TimerKey.ANTI_ENTROPY)]
        return []

    @property
    def peers(self) -> list[NodeId]:
        return list(self._peers)

    @property
    def signature_checks(self) -> int:
        """Signature verifications done so far (one per signed batch seen, thanks to the cache)."""
        return self._roots.verifications

    @property
    def queued(self) -> int:
        """Deltas waiting to be pushed."""
        return len(self._queue)

    def write(self, now: float, table: str, key: str, value: bytes | None) -> tuple[list[Effect], Record]:
        """Write (or, with value None, delete) one record; it is stored and queued for gossip.

        Raises:
            InvalidWrite: a field is malformed or too large (names the field); nothing changed.
            WriteRefused: this node may not write `table`/`key`; nothing changed.
        """
        effects, records = self.write_many(now, [(table, key, value)])
        return effects, records[0]

    def write_many(
        self, now: float, items: Sequence[tuple[str, str, bytes | None]]
    ) -> tuple[list[Effect], list[Record]]:
        """Write a batch with one signature (all checked before anything changes).

        Raises:
            InvalidWrite, WriteRefused: as `write`, naming the item index.
        """
        if not 1 <= len(items) <= self.config.max_write_batch:
            raise InvalidWrite(f"items: need 1..{self.config.max_write_batch} items, got {len(items)}")
        for i, (table, key, value) in enumerate(items):
            self._check_write(i, table, key, value)
        wall = self._wall(now)
        drafts: list[Draft] = []
        for table, key, value in items:
            cur = self.store.get(table, key)
            floor = max(self._hlc, cur.version.hlc if cur is not None else 0)
            self._hlc = hlcmod.tick(floor, wall)
            drafts.append(
                Draft(
                    table=table,
                    key=key,
                    value=b"" if value is None else value,
                    version=Version(hlc=self._hlc, origin=self.self_id),
                    tombstone=value is None,
                )
            )
        records = sign_batch(drafts, self._signer)
        final: dict[tuple[str, str], Record] = {(r.table, r.key): r for r in records}
        self.store.put_many(list(final.values()))
        self.stats.written += len(records)
        for r in final.values():
            self._enqueue(r)
        return [Changed(r.table, r.key, r) for r in final.values()], records

    def on_message(self, now: float, src: NodeId, msg: ReplMessage) -> list[Effect]:
        """Handle one decoded, envelope-verified message from peer `src`."""
        match msg:
            case Push():
                return self._merge(now, src, msg.records, forward=True)
            case AeDigest():
                return self._on_ae_digest(src, msg)
            case AeBuckets():
                return self._on_ae_buckets(src, msg)
            case AeEntries():
                return self._on_ae_entries(now, src, msg)
            case AeRecords():
                return self._on_ae_records(now, src, msg)
            case _:
                self.stats.bad_messages += 1
                return []

    def on_timer(self, now: float, key: object) -> list[Effect]:
        """Handle a timer set by an earlier `Wake`."""
        if key == TimerKey.GOSSIP:
            return self._gossip_round(now)
        if key == TimerKey.ANTI_ENTROPY:
            return self._ae_round(now)
        if key == TimerKey.GC:
            return self._gc(now)
        return []

    # ----- local writes -----------------------------------------------------------------
    def _check_write(self, i: int, table: str, key: str, value: bytes | None) -> None:
        if not isinstance(table, str) or not _TABLE_RE.match(table):
            raise InvalidWrite(f"items.{i}.table: must match {TABLE_PATTERN}, got {table!r}")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
            raise InvalidWrite(f"items.{i}.key: must be a string of 1..{MAX_KEY_CHARS} chars")
        if value is not None:
            if not isinstance(value, bytes):
                raise InvalidWrite(f"items.{i}.value: must be bytes or None, got {type(value).__name__}")
            if len(value) > self.config.max_value_bytes:
                raise InvalidWrite(
                    f"items.{i}.value: {len(value)} bytes is over max_value_bytes={self.config.max_value_bytes}"
                )
        if not self._authority.may_write(self.self_id, table, key):
            raise WriteRefused(f"items.{i}: node {self.self_id} may not write {table}/{key}")

    def _enqueue(self, r: Record) -> None:
        k = (r.table, r.key)
        self._queue.pop(k, None)  # a newer version replaces a queued older one
        self._queue[k] = _Delta(r)
        if len(self._queue) > self.config.max_queue:
            self._queue.popitem(last=False)
            self.stats.deltas_dropped += 1

    def _wall(self, now: float) -> float:
        return now + self._wall_offset_s

    # ----- merge ------------------------------------------------------------------------
    def _check(self, r: Record, wall: float) -> RejectReason | None:
        """The cheap checks, cheapest first (the signature is checked per group, afterwards)."""
        if r.tombstone and r.value:
            return RejectReason.MALFORMED
        if len(r.value) > self.config.max_value_bytes:
            return RejectReason.TOO_LARGE
        if r.proof.index >> len(r.proof.path):
            return RejectReason.MALFORMED
        if not self._authority.may_write(NodeId(r.version.origin), r.table, r.key):
            return RejectReason.NO_AUTHORITY
        if hlcmod.wall_s(r.version.hlc) - wall > self.config.max_drift_s:
            return RejectReason.CLOCK_DRIFT
        return None

    def _signed(self, records: list[Record]) -> list[bool]:
        """Which records carry a valid origin signature.

        Records of one signed batch (same origin, signature and depth) are checked together:
        each tree node is hashed once and the root verified once. If a group does not add up
        (a forged record among good ones), its records are checked one by one."""
        groups: dict[tuple[str, bytes, int], list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault((r.version.origin, r.proof.sig, len(r.proof.path)), []).append(i)
        ok = [False] * len(records)
        for (origin, sig, _), idxs in groups.items():
            items = [(record_hash(records[i]), records[i].proof) for i in idxs]
            if len(idxs) > 1 and self._roots.check_group(NodeId(origin), sig, items):
                for i in idxs:
                    ok[i] = True
                continue
            for i, (leaf, proof) in zip(idxs, items, strict=True):
                ok[i] = self._roots.check(NodeId(origin), proof_root(leaf, proof), sig)
        return ok

    def _reject(self, reason: RejectReason, src: NodeId, r: Record) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        if reason not in self._warned:  # once per reason: bounded, peers cannot flood the log
            self._warned.add(reason)
            log.warning(
                "replicated record rejected",
                extra={"reason": reason.value, "peer": src, "origin": r.version.origin, "table": r.table},
            )

    def _merge(
        self,
        now: float,
        src: NodeId,
        records: Sequence[Record],
        *,
        forward: bool,
        known: list[int] | None = None,
    ) -> list[Effect]:
        """Check and merge records; store the winners in one batch; queue them if `forward`.

        Indices of records that were not news (held already, or older) go to `known`."""
        wall = self._wall(now)
        horizon = wall - self.config.tombstone_grace_s
        keys = list(dict.fromkeys((r.table, r.key) for r in records))
        stored = dict(zip(keys, self.store.get_many(keys), strict=True))
        cands: list[Record] = []
        for idx, r in enumerate(records):
            k = (r.table, r.key)
            if not supersedes(r, stored[k]):
                self.stats.duplicates += 1
                if known is not None:
                    known.append(idx)
                continue
            reason = self._check(r, wall)
            if reason is not None:
                self._reject(reason, src, r)
                continue
            cands.append(r)
        view: dict[tuple[str, str], Record | None] = {}
        changed: dict[tuple[str, str], Record] = {}
        for r, good in zip(cands, self._signed(cands), strict=True):
            if not good:
                self._reject(RejectReason.BAD_SIGNATURE, src, r)
                continue
            k = (r.table, r.key)
            cur = view[k] if k in view else stored[k]
            if not supersedes(r, cur):  # an earlier record of this message was newer
                self.stats.duplicates += 1
                continue
            self._hlc = max(self._hlc, r.version.hlc)
            if r.tombstone and hlcmod.wall_s(r.version.hlc) < horizon:
                # Past the grace period: apply the delete, but never store (or re-spread) the
                # tombstone, or nodes that already collected it would get it back.
                self.stats.expired_tombstones += 1
                if cur is not None and not cur.tombstone:
                    view[k] = None
                    changed[k] = r
                continue
            view[k] = r
            changed[k] = r
        if not view:
            return []
        puts = [r for r in view.values() if r is not None]
        deletes = [k for k, r in view.items() if r is None and stored[k] is not None]
        self.store.put_many(puts, deletes)
        self.stats.merged += len(changed)
        if forward:
            for r in puts:
                self._enqueue(r)
        return [Changed(t, k, r) for (t, k), r in changed.items()]

    # ----- push gossip ------------------------------------------------------------------
    def _gossip_round(self, now: float) -> list[Effect]:
        c = self.config
        effects: list[Effect] = [Wake(now + c.gossip_interval_s, TimerKey.GOSSIP)]
        if not self._queue or not self._peers:
            return effects
        limit = retransmit_limit(len(self._peers) + 1, c.retransmit_mult)
        targets = self._rng.sample(self._peers, min(c.fanout, len(self._peers)))
        for to in targets:
            batch: list[Record] = []
            size = 0
            done: list[tuple[str, str]] = []
            for k in reversed(self._queue):  # newest first (fewest transmissions), memberlist-style
                d = self._queue[k]
                s = wire_size(d.record)
                if batch and size + s > c.max_push_bytes:
                    break
                batch.append(d.record)
                size += s
                d.sent += 1
                if d.sent >= limit:
                    done.append(k)
            for k in done:
                del self._queue[k]
            if not batch:
                break
            effects.append(Send(to, Push(records=tuple(batch))))
            self.stats.pushes_sent += 1
            self.stats.push_records_sent += len(batch)
            if not self._queue:
                break
        return effects

    # ----- anti-entropy -----------------------------------------------------------------
    def _ae_round(self, now: float) -> list[Effect]:
        c = self.config
        effects: list[Effect] = [
            Wake(now + c.ae_interval_s * self._rng.uniform(0.8, 1.2), TimerKey.ANTI_ENTROPY)
        ]
        if self._peers:
            peer = self._rng.choice(self._peers)
            self.stats.ae_rounds += 1
            effects.append(Send(peer, ae.digest_of(self.store)))
        return effects

    def _on_ae_digest(self, src: NodeId, msg: AeDigest) -> list[Effect]:
        self.stats.ae_rounds_answered += 1
        return [Send(src, m) for m in ae.buckets_to_compare(self.store, msg, self._empty_root)]

    def _on_ae_buckets(self, src: NodeId, msg: AeBuckets) -> list[Effect]:
        c = self.config
        budget = ae.AeBudget(c.max_ae_entries_per_msg, c.max_ae_msg_bytes, c.max_ae_entries_per_round)
        out = ae.entries_to_send(self.store, msg, budget, self._rng)
        if out is None:
            self.stats.bad_messages += 1
            return []
        return [Send(src, m) for m in out]

    def _on_ae_entries(self, now: float, src: NodeId, msg: AeEntries) -> list[Effect]:
        found = ae.reconcile(self.store, msg)
        if found is None:
            self.stats.bad_messages += 1
            return []
        send, want = found
        return self._send_records(now, src, send, want)

    def _on_ae_records(self, now: float, src: NodeId, msg: AeRecords) -> list[Effect]:
        out = self._merge(now, src, msg.records, forward=False)
        self.stats.ae_records_merged += sum(1 for e in out if isinstance(e, Changed))
        if msg.want:
            found = [r for r in (self.store.get(w.table, w.key) for w in msg.want) if r is not None]
            out.extend(self._send_records(now, src, found, []))
        return out

    def _send_records(
        self, now: float, to: NodeId, records: list[Record], want: list[KeyRef]
    ) -> list[Effect]:
        # A tombstone past its grace period is collected here instead of sent: the peer would
        # drop it anyway, and holding it until the next GC timer keeps the digests apart.
        horizon = self._wall(now) - self.config.tombstone_grace_s
        expired = [
            (r.table, r.key) for r in records if r.tombstone and hlcmod.wall_s(r.version.hlc) < horizon
        ]
        if expired:
            self.store.put_many([], expired)
            self.stats.tombstones_collected += len(expired)
            records = [r for r in records if not (r.tombstone and hlcmod.wall_s(r.version.hlc) < horizon)]
        self.stats.ae_records_sent += len(records)
        return [Send(to, m) for m in _chunk_records(records, want, self.config)]

    # ----- tombstone GC -----------------------------------------------------------------
    def _gc(self, now: float) -> list[Effect]:
        horizon = self._wall(now) - self.config.tombstone_grace_s
        expired = [
            (r.table, r.key) for r in self.store.tombstones() if hlcmod.wall_s(r.version.hlc) < horizon
        ]
        if expired:
            self.store.put_many([], expired)
            self.stats.tombstones_collected += len(expired)
            log.debug("tombstones collected", extra={"count": len(expired)})
        return [Wake(now + self.config.gc_interval_s, TimerKey.GC)]


def _chunk_records(records: list[Record], want: list[KeyRef], c: ReplicationConfig) -> list[AeRecords]:
    """AeRecords messages carrying `records` and `want`, each within the count and byte caps."""
    out: list[AeRecords] = []
    recs: list[Record] = []
    keys: list[KeyRef] = []
    size = 0
    for r in records:
        s = wire_size(r)
        if recs and (len(recs) >= c.max_ae_records_per_msg or size + s > c.max_ae_msg_bytes):
            out.append(AeRecords(records=tuple(recs)))
            recs, size = [], 0
        recs.append(r)
        size += s
    for k in want:
        s = ae.keyref_size(k)
        if (recs or keys) and (len(keys) >= MAX_ENTRIES_PER_MSG or size + s > c.max_ae_msg_bytes):
            out.append(AeRecords(records=tuple(recs), want=tuple(keys)))
            recs, keys, size = [], [], 0
        keys.append(k)
        size += s
    if recs or keys:
        out.append(AeRecords(records=tuple(recs), want=tuple(keys)))
    return out


__all__ = ["Changed", "Effect", "ReplicationStats", "Replicator", "TimerKey", "retransmit_limit"]
