"""Simulator acceptance of replication: many seeded runs with loss, reordering, duplicates,
partitions, crashes and clock skew; after healing every node holds the same records.

Checks: equal table digests and equal stores everywhere; each key holds the LWW winner of all
writes to it (concurrent writes agree; deleted records stay deleted, also across tombstone GC);
a node that was down catches up by anti-entropy; bad records are never stored or forwarded.
Sweeps use a fast keyed-hash signer; `test_real_ed25519_*` runs the same with PyNaCl.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest

from federation.replication import (
    AdminOnly,
    AnyMember,
    Changed,
    MemoryStore,
    Record,
    RejectReason,
    ReplicationConfig,
    Replicator,
    SelfKeyed,
    TableRules,
    Version,
    order_key,
    sign_batch,
)
from federation.replication.gossip import Effect
from federation.replication.record import Draft
from federation.replication.wire import AeRecords, Push
from federation.sansio import NodeId, Send
from tests.sim.net import SimNet

SWEEP_RUNS = int(os.environ.get("AIOSD_REPL_SWEEP", "200"))
ADMIN = NodeId("n0")


# ----- signers ---------------------------------------------------------------------------
class FastKeys:
    """Keyed-hash stand-in for ed25519: a node can only 'sign' with its own secret."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.known = {i: hashlib.sha256(b"secret:" + i.encode()).digest() for i in ids}

    def signer(self, nid: str) -> Callable[[bytes], bytes]:
        key = self.known.get(nid) or hashlib.sha256(b"secret:" + nid.encode()).digest()
        return lambda msg: hashlib.blake2b(msg, key=key, digest_size=64).digest()

    def verify(self, origin: NodeId, msg: bytes, sig: bytes) -> bool:
        key = self.known.get(origin)
        return key is not None and hashlib.blake2b(msg, key=key, digest_size=64).digest() == sig


class Ed25519Keys:
    """Real PyNaCl keys per node; the verifier knows the honest nodes' public keys only."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.sk = {i: nacl.signing.SigningKey.generate() for i in ids}
        self.known = {i: k.verify_key for i, k in self.sk.items()}

    def signer(self, nid: str) -> Callable[[bytes], bytes]:
        sk = self.sk.setdefault(nid, nacl.signing.SigningKey.generate())
        return lambda msg: sk.sign(msg).signature

    def verify(self, origin: NodeId, msg: bytes, sig: bytes) -> bool:
        vk = self.known.get(origin)
        if vk is None:
            return False
        try:
            vk.verify(msg, sig)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


# ----- harness ---------------------------------------------------------------------------
class ReplNet(SimNet):
    """SimNet plus: call a core's input method and apply its effects; spy on honest pushes."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.sent_records: list[tuple[NodeId, Record]] = []

    def do(self, nid: NodeId, fn: Callable[[float], list[Any]]) -> None:
        self._apply(nid, fn(self.now))

    def _step(self) -> None:
        # Work around a SimNet bug: a timer deferred by stall() is re-queued at the stall's end
        # but its entry in _timers keeps the old time, so it is then taken as cancelled and the
        # node's timers stop for good. Move the entry along with the event.
        ev = self._queue[0]
        stalled = self._stalled_until.get(ev.node, 0.0)
        key = (ev.node, ev.payload)
        if ev.kind == "timer" and stalled > max(self.now, ev.at) and self._timers.get(key) == ev.at:
            self._timers[key] = stalled
        super()._step()

    def _send(self, src: NodeId, dst: NodeId, msg: Any) -> None:
        if isinstance(msg, Push | AeRecords):
            self.sent_records.extend((src, r) for r in msg.records)
        super()._send(src, dst, msg)


def authority() -> TableRules:
    return TableRules({"reg": AnyMember(), "nodes": SelfKeyed(), "specs": AdminOnly(lambda o: o == ADMIN)})


class Cluster:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        loss: float = 0.0,
        dup: float = 0.0,
        delay_s: tuple[float, float] = (0.001, 0.01),
        cfg: ReplicationConfig | None = None,
        keys: FastKeys | Ed25519Keys | None = None,
        skew_s: float = 0.0,
    ) -> None:
        self.cfg = cfg or ReplicationConfig.test()
        self.ids = [NodeId(f"n{i}") for i in range(n)]
        self.keys = keys or FastKeys(self.ids)
        self.net = ReplNet(seed, loss=loss, dup=dup, delay_s=delay_s)
        self.rng = random.Random(seed)
        self.stores = {i: MemoryStore(self.cfg.buckets) for i in self.ids}
        self.offsets = {i: self.rng.uniform(-skew_s, skew_s) for i in self.ids}
        self.reps: dict[NodeId, Replicator] = {}
        self.written: dict[tuple[str, str], list[Record]] = {}
        self._incarnation = 0
        self.diverged_at_heal = False
        for i in self.ids:
            self.net.add(i, self._make(i))
        for i in self.ids:
            self.set_peers(i)

    def _make(self, i: NodeId) -> Replicator:
        self._incarnation += 1
        rep = Replicator(
            i,
            self.cfg,
            self.stores[i],
            self.keys.signer(i),
            self.keys.verify,
            authority(),
            random.Random(self.rng.random()),
            wall_offset_s=1000.0 + self.offsets[i],
        )
        self.reps[i] = rep
        return rep

    def set_peers(self, i: NodeId, peers: Sequence[NodeId] | None = None) -> None:
        alive = list(peers) if peers is not None else [p for p in self.ids if self.net.is_up(p)]
        self.net.do(i, lambda now: self.reps[i].set_peers(now, alive))

    def write(self, i: NodeId, table: str, key: str, value: bytes | None) -> Record:
        box: list[Record] = []

        def go(now: float) -> list[Effect]:
            effects, rec = self.reps[i].write(now, table, key, value)
            box.append(rec)
            return list(effects)

        self.net.do(i, go)
        self.written.setdefault((table, key), []).append(box[0])
        return box[0]

    def write_many(self, i: NodeId, items: list[tuple[str, str, bytes | None]]) -> None:
        def go(now: float) -> list[Effect]:
            effects, recs = self.reps[i].write_many(now, items)
            for r in recs:
                self.written.setdefault((r.table, r.key), []).append(r)
            return list(effects)

        self.net.do(i, go)

    def crash(self, i: NodeId) -> None:
        self.net.crash(i)

    def restart(self, i: NodeId) -> None:
        """Come back with the same (persisted) store and a fresh core."""
        self.net.restart(i, self._make(i))
        self.set_peers(i)

    def up(self) -> list[NodeId]:
        return [i for i in self.ids if self.net.is_up(i)]

    def converged(self, nodes: Sequence[NodeId] | None = None) -> bool:
        """Equal table summaries on `nodes` (default: the nodes that are up)."""
        nodes = list(nodes) if nodes is not None else self.up()
        first = self.stores[nodes[0]]
        tables = first.tables()
        ref = [first.summary(t) for t in tables]
        return all(
            self.stores[i].tables() == tables and [self.stores[i].summary(t) for t in tables] == ref
            for i in nodes[1:]
        )

    def run_until_converged(self, max_s: float, step_s: float = 0.25) -> float:
        start = self.net.now
        while not self.converged():
            if self.net.now - start > max_s:
                raise AssertionError(f"not converged within {max_s} virtual seconds")
            self.net.run_for(step_s)
        return self.net.now - start

    def check_lww(self) -> None:
        """Every up node holds exactly the LWW winner of all writes of each key."""
        for (table, key), recs in self.written.items():
            win = max(recs, key=order_key)
            for i in self.up():
                got = self.stores[i].get(table, key)
                if win.tombstone:
                    assert got is None or got == win, (i, table, key, got)
                else:
                    assert got == win, (i, table, key, got, win)
        stores = [self.stores[i].all_records() for i in self.up()]
        assert all(s == stores[0] for s in stores[1:])


# ----- the sweep -------------------------------------------------------------------------
def _scenario(seed: int) -> Cluster:
    rng = random.Random(seed)
    n = rng.randint(3, 8)
    c = Cluster(
        n,
        seed,
        loss=rng.choice([0.0, 0.1, 0.3]),
        dup=rng.choice([0.0, 0.1]),
        delay_s=(0.001, rng.choice([0.01, 0.4])),  # 0.4 s > a gossip round: heavy reordering
        skew_s=rng.choice([0.0, 0.5]),
    )
    keys = [f"k{j}" for j in range(6)]

    def burst(nodes: Sequence[NodeId], count: int) -> None:
        for _ in range(count):
            i = rng.choice(list(nodes))
            if rng.random() < 0.2:
                c.write(i, "nodes", i, rng.randbytes(4))
            else:
                val = None if rng.random() < 0.25 else rng.randbytes(rng.randint(0, 12))
                c.write(i, "reg", rng.choice(keys), val)
            c.net.run_for(rng.uniform(0.0, 0.3))

    burst(c.ids, rng.randint(3, 10))
    event = rng.choice(["partition", "crash", "both"])
    down: NodeId | None = None
    if event in ("crash", "both"):
        down = rng.choice(c.ids[1:])
        c.crash(down)
    if event in ("partition", "both"):
        cut = rng.randint(1, n - 1)
        a, b = set(c.ids[:cut]), set(c.ids[cut:])
        c.net.partition(a, b)
        # Concurrent writes to the same keys on both sides of the cut.
        burst([i for i in c.ids[:cut] if c.net.is_up(i)] or c.ids[:1], rng.randint(2, 6))
        burst([i for i in c.ids[cut:] if c.net.is_up(i)] or c.ids[cut:], rng.randint(2, 6))
    else:
        burst(c.up(), rng.randint(2, 6))
    if rng.random() < 0.3:
        c.net.stall(rng.choice(c.up()), rng.uniform(0.5, 2.0))  # a frozen event loop
    c.net.run_for(rng.uniform(0.5, 3.0))
    c.diverged_at_heal = not c.converged(c.ids)  # crashed nodes' stores included
    c.net.heal()
    if down is not None:
        c.restart(down)
    return c


@pytest.mark.parametrize("seed", range(SWEEP_RUNS))
def test_sweep_converges_to_lww_winner_everywhere(seed: int) -> None:
    c = _scenario(seed)
    c.run_until_converged(max_s=40)
    c.check_lww()


def test_sweep_scenarios_really_diverge_before_healing() -> None:
    """Guards the sweep itself: most runs must be out of sync when the network heals."""
    diverged = sum(_scenario(seed).diverged_at_heal for seed in range(40))
    assert diverged >= 30, diverged


# ----- focused scenarios -----------------------------------------------------------------
def test_concurrent_writes_to_one_key_converge_to_the_same_value() -> None:
    c = Cluster(6, 11, loss=0.2, delay_s=(0.001, 0.3))
    c.net.partition(c.ids[:3], c.ids[3:])
    for i in c.ids:
        c.write(i, "reg", "shared", i.encode())

    def sides_settled() -> bool:
        vals = [c.stores[i].get("reg", "shared") for i in c.ids]
        return {v.value for v in vals[:3] if v} == {b"n2"} and {v.value for v in vals[3:] if v} == {b"n5"}

    # Equal HLCs (same instant, no skew): the larger origin id wins on each side.
    c.net.run_until(sides_settled, max_s=30)
    c.net.heal()
    c.run_until_converged(max_s=20)
    c.check_lww()
    values = {c.stores[i].get("reg", "shared").value for i in c.ids}  # type: ignore[union-attr]
    assert len(values) == 1


def test_deleted_record_stays_deleted_across_tombstone_gc_with_a_returning_node() -> None:
    cfg = ReplicationConfig.test()  # grace 30 s, GC every 2 s
    c = Cluster(5, 3, loss=0.1, cfg=cfg)
    c.write(c.ids[0], "reg", "doomed", b"alive")
    c.run_until_converged(max_s=10)
    away = c.ids[4]
    c.crash(away)  # holds the live record while away
    c.net.run_for(5.0)
    c.write(c.ids[1], "reg", "doomed", None)
    c.net.run_for(10.0)  # away 15 s < grace 30 s
    c.restart(away)
    c.run_until_converged(max_s=10)
    assert c.stores[away].get("reg", "doomed").tombstone  # type: ignore[union-attr]
    c.net.run_for(cfg.tombstone_grace_s + 2 * cfg.gc_interval_s)
    for i in c.ids:
        assert c.stores[i].get("reg", "doomed") is None, i
        assert c.reps[i].stats.tombstones_collected >= 1
    c.net.run_for(10 * cfg.ae_interval_s)  # many anti-entropy rounds later: still gone
    assert c.converged()
    assert all(c.stores[i].get("reg", "doomed") is None for i in c.ids)


@pytest.mark.parametrize("records", [2_000, 10_000], ids=lambda n: f"{n}rec")
def test_node_down_during_many_writes_catches_up_by_anti_entropy(records: int) -> None:
    cfg = ReplicationConfig.test()
    c = Cluster(5, 5, cfg=cfg)
    late = c.ids[4]
    c.crash(late)
    for b in range(records // 100):  # signed batches of 100
        c.write_many(c.ids[b % 4], [("reg", f"r{b}-{j}", b"v" * 32) for j in range(100)])
        c.net.run_for(0.05)
    c.run_until_converged(max_s=30)
    assert late not in c.up()
    c.restart(late)
    took = c.run_until_converged(max_s=10, step_s=0.05)
    assert len(c.stores[late]) == records
    assert took <= 2 * cfg.ae_interval_s  # <= 2 anti-entropy rounds
    stats = c.reps[late].stats
    assert stats.ae_records_merged >= records * 0.95  # by anti-entropy, not by replaying gossip
    c.check_lww()


class Mallory:
    """A peer that pushes forged records to every honest node (and does nothing else)."""

    def __init__(self, me: NodeId, targets: Sequence[NodeId], records: Sequence[Record]) -> None:
        self.me, self.targets, self.records = me, targets, records

    def start(self, now: float) -> list[Any]:
        return [Send(t, Push(records=tuple(self.records))) for t in self.targets]

    def on_message(self, now: float, src: NodeId, msg: Any) -> list[Any]:
        if isinstance(msg, Push | AeRecords):
            return []
        # Answer anti-entropy too, offering the forged records as if it held them.
        return [Send(src, AeRecords(records=tuple(self.records)))]

    def on_timer(self, now: float, key: Any) -> list[Any]:
        return []


def _forged(keys: FastKeys | Ed25519Keys, now_wall: float) -> dict[RejectReason, list[Record]]:
    h = int(now_wall * 1000) << 16
    mallory = keys.signer("mallory")
    honest = keys.signer("n1")

    def signed(signer: Callable[[bytes], bytes], origin: str, table: str, key: str) -> Record:
        d = Draft(table, key, b"evil", Version(hlc=h, origin=origin), False)
        return sign_batch([d], signer)[0]

    good = signed(honest, "n1", "reg", "tampered")
    tampered = good.model_copy(update={"value": b"evil!"})  # bytes changed after signing
    return {
        RejectReason.BAD_SIGNATURE: [
            tampered,
            signed(mallory, "n1", "reg", "forged-origin"),  # claims n1, signed by mallory
            signed(mallory, "mallory", "reg", "unknown-origin"),  # no certificate known
        ],
        RejectReason.NO_AUTHORITY: [
            signed(mallory, "n2", "nodes", "n1"),  # n2 record about n1 (and bad sig too)
            signed(honest, "n1", "nodes", "n2"),  # validly signed by n1, but key is n2's
            signed(honest, "n1", "specs", "evil-spec"),  # admin table, n1 is not admin
            signed(honest, "n1", "unknown_table", "x"),
        ],
        RejectReason.CLOCK_DRIFT: [
            sign_batch(
                [Draft("reg", "future", b"x", Version(hlc=h + (3600_000 << 16), origin="n1"), False)], honest
            )[0]
        ],
    }


@pytest.mark.parametrize("real", [False, True], ids=["fastsig", "ed25519"])
def test_bad_records_are_rejected_and_never_stored_or_forwarded(real: bool) -> None:
    ids = [NodeId(f"n{i}") for i in range(4)]
    keys: FastKeys | Ed25519Keys = Ed25519Keys(ids) if real else FastKeys(ids)
    c = Cluster(4, 9, keys=keys, loss=0.1)
    forged = _forged(keys, 1000.0)
    bad = [r for rs in forged.values() for r in rs]
    m = NodeId("mallory")
    c.net.add(m, Mallory(m, c.ids, bad))
    for i in c.ids:
        c.set_peers(i, [*c.ids, m])  # mallory is a member: honest nodes gossip with it
    c.write(c.ids[0], "reg", "honest", b"ok")
    c.write(c.ids[0], "specs", "s", b"admin spec")  # n0 is admin: allowed
    c.net.run_for(10.0)
    bad_keys = {(r.table, r.key) for r in bad}
    for i in c.ids:
        held = set(c.stores[i].all_records())
        assert not held & bad_keys, (i, held & bad_keys)
        assert c.stores[i].get("reg", "honest") is not None
        assert c.stores[i].get("specs", "s") is not None
    total: dict[RejectReason, int] = {}
    for i in c.ids:
        for reason, n in c.reps[i].stats.rejected.items():
            total[reason] = total.get(reason, 0) + n
    for reason in forged:
        assert total.get(reason, 0) >= len(c.ids), (reason, total)
    forwarded = [(src, r.key) for src, r in c.net.sent_records if src != m and (r.table, r.key) in bad_keys]
    assert forwarded == []


def test_real_ed25519_cluster_converges_with_loss_and_partition() -> None:
    ids = [NodeId(f"n{i}") for i in range(5)]
    c = Cluster(5, 21, keys=Ed25519Keys(ids), loss=0.2, dup=0.1, delay_s=(0.001, 0.3))
    rng = random.Random(21)
    c.net.partition(ids[:2], ids[2:])
    for _ in range(30):
        i = rng.choice(ids)
        c.write(i, "reg", f"k{rng.randint(0, 5)}", None if rng.random() < 0.3 else rng.randbytes(8))
        c.net.run_for(0.1)
    c.write_many(ids[3], [("reg", f"b{j}", b"x") for j in range(50)])
    c.net.heal()
    c.run_until_converged(max_s=20)
    c.check_lww()
    assert sum(r.stats.rejected_total() for r in c.reps.values()) == 0


def test_watchers_see_changed_for_every_applied_record() -> None:
    c = Cluster(3, 4)
    seen: dict[NodeId, set[tuple[str, str]]] = {i: set() for i in c.ids}

    def obs(now: float, nid: NodeId, eff: Any) -> None:
        if isinstance(eff, Changed):
            seen[nid].add((eff.table, eff.key))

    c.net.observers.append(obs)
    c.write(c.ids[0], "reg", "a", b"1")
    c.write(c.ids[1], "reg", "b", None)
    c.run_until_converged(max_s=10)
    assert all(s == {("reg", "a"), ("reg", "b")} for s in seen.values())
