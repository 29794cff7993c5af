"""The Replicator core driven by hand: writes, pushes, anti-entropy steps, merge checks, GC."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import pytest

from federation.replication import (
    AnyMember,
    Changed,
    InvalidWrite,
    MemoryStore,
    Record,
    RejectReason,
    ReplicationConfig,
    Replicator,
    SelfKeyed,
    TableRules,
    TimerKey,
    Version,
    WriteRefused,
    sign_batch,
)
from federation.replication import hlc as hlcmod
from federation.replication.digest import bucket_of
from federation.replication.gossip import retransmit_limit
from federation.replication.record import Draft
from federation.replication.wire import AeBuckets, AeDigest, AeEntries, AeRecords, Entry, Push, encode
from federation.sansio import NodeId, Send, Wake

CFG = ReplicationConfig.test()
RULES = TableRules({"reg": AnyMember(), "nodes": SelfKeyed()})
WALL0 = 1_000.0


def key_of(n: str) -> bytes:
    return hashlib.sha256(n.encode()).digest()


def signer(n: str):  # type: ignore[no-untyped-def]  # small test factory
    return lambda m: hashlib.blake2b(m, key=key_of(n), digest_size=64).digest()


def verify(origin: NodeId, m: bytes, s: bytes) -> bool:
    return origin.startswith("n") and hashlib.blake2b(m, key=key_of(origin), digest_size=64).digest() == s


def make(
    nid: str = "n1", cfg: ReplicationConfig = CFG, store: MemoryStore | None = None, seed: int = 0
) -> Replicator:
    return Replicator(
        NodeId(nid),
        cfg,
        store if store is not None else MemoryStore(cfg.buckets),
        signer(nid),
        verify,
        RULES,
        random.Random(seed),
        wall_offset_s=WALL0,
    )


def sends(effects: Sequence[Any]) -> list[Send[Any]]:
    return [e for e in effects if isinstance(e, Send)]


def foreign(origin: str, key: str, value: bytes | None, at_wall: float, table: str = "reg") -> Record:
    d = Draft(table, key, value or b"", Version(hlc=hlcmod.from_wall(at_wall), origin=origin), value is None)
    return sign_batch([d], signer(origin))[0]


def test_start_arms_all_timers() -> None:
    keys = {e.key for e in make().start(0.0) if isinstance(e, Wake)}
    assert keys == {TimerKey.GOSSIP, TimerKey.ANTI_ENTROPY, TimerKey.GC}


def test_write_stores_signs_notifies_and_delete_is_a_tombstone() -> None:
    r = make()
    effects, rec = r.write(1.0, "reg", "a", b"v1")
    assert effects == [Changed("reg", "a", rec)] and r.store.get("reg", "a") == rec
    assert hlcmod.wall_s(rec.version.hlc) == pytest.approx(WALL0 + 1.0)
    _, tomb = r.write(1.0, "reg", "a", None)
    assert tomb.tombstone and tomb.value == b"" and tomb.version.hlc > rec.version.hlc
    assert r.store.get("reg", "a") == tomb and r.queued == 1  # newer delta replaced the older


@pytest.mark.parametrize(
    ("table", "key", "value", "err", "match"),
    [
        ("Bad", "k", b"", InvalidWrite, r"items\.0\.table"),
        ("reg", "", b"", InvalidWrite, r"items\.0\.key"),
        ("reg", "k" * 300, b"", InvalidWrite, r"items\.0\.key"),
        ("reg", "k", "text", InvalidWrite, r"items\.0\.value: must be bytes"),
        ("reg", "k", b"x" * (CFG.max_value_bytes + 1), InvalidWrite, "max_value_bytes"),
        ("nodes", "n2", b"", WriteRefused, "may not write nodes/n2"),
        ("other", "k", b"", WriteRefused, "may not write"),
    ],
)
def test_bad_writes_are_refused_and_change_nothing(
    table: str, key: str, value: Any, err: type[Exception], match: str
) -> None:
    r = make()
    with pytest.raises(err, match=match):
        r.write_many(1.0, [("reg", "fine", b"ok"), (table, key, value)][1:])
    with pytest.raises(err):
        r.write_many(1.0, [("reg", "fine", b"ok"), (table, key, value)])  # batch: all or nothing
    assert len(r.store) == 0 and r.queued == 0 and r.stats.written == 0  # type: ignore[arg-type]


def test_write_batch_size_is_bounded() -> None:
    r = make()
    with pytest.raises(InvalidWrite, match="items: need 1"):
        r.write_many(0.0, [])
    with pytest.raises(InvalidWrite, match="items: need 1"):
        r.write_many(0.0, [("reg", f"k{i}", b"") for i in range(CFG.max_write_batch + 1)])


def test_gossip_round_pushes_to_fanout_peers_until_retransmit_limit() -> None:
    r = make()
    r.set_peers(0.0, [NodeId(f"n{i}") for i in range(1, 11)])  # self in the list is ignored
    assert len(r.peers) == 9
    r.write(0.0, "reg", "a", b"v")
    limit = retransmit_limit(10, CFG.retransmit_mult)
    rounds = 0
    targets: list[str] = []
    while r.queued:
        out = sends(r.on_timer(0.2 * rounds, TimerKey.GOSSIP))
        assert 1 <= len(out) <= CFG.fanout and len({s.to for s in out}) == len(out)
        targets += [s.to for s in out]
        assert all(isinstance(s.msg, Push) and s.msg.records[0].key == "a" for s in out)
        rounds += 1
    assert len(targets) == limit
    assert sends(r.on_timer(9.0, TimerKey.GOSSIP)) == []  # nothing queued: no traffic


def test_push_budget_and_queue_overflow_drop_oldest() -> None:
    cfg = ReplicationConfig.test().model_copy(update={"max_queue": 5, "max_push_bytes": 600})
    r = make(cfg=cfg)
    r.set_peers(0.0, [NodeId("n2")])
    for i in range(8):
        r.write(0.0, "reg", f"k{i}", b"x" * 100)
    assert r.queued == 5 and r.stats.deltas_dropped == 3
    (push,) = sends(r.on_timer(0.2, TimerKey.GOSSIP))
    assert [x.key for x in push.msg.records] == ["k7", "k6"]  # newest first, within budget


def test_merge_forwards_new_records_only_once() -> None:
    a = make("n1")
    a.set_peers(0.0, [NodeId("n2")])
    rec = foreign("n3", "x", b"1", WALL0)
    out = a.on_message(1.0, NodeId("n2"), Push(records=(rec, rec)))
    assert out == [Changed("reg", "x", rec)] and a.queued == 1 and a.stats.duplicates == 1
    assert a.on_message(1.0, NodeId("n2"), Push(records=(rec,))) == []
    assert a.stats.merged == 1 and a.stats.duplicates == 2


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (foreign("n3", "x", b"1", WALL0).model_copy(update={"value": b"2"}), RejectReason.BAD_SIGNATURE),
        (foreign("evil", "x", b"1", WALL0), RejectReason.BAD_SIGNATURE),  # unknown origin
        (foreign("n3", "n4", b"1", WALL0, table="nodes"), RejectReason.NO_AUTHORITY),
        (foreign("n3", "x", b"1", WALL0, table="secret"), RejectReason.NO_AUTHORITY),
        (foreign("n3", "x", b"1", WALL0 + 60), RejectReason.CLOCK_DRIFT),
        (foreign("n3", "x", None, WALL0).model_copy(update={"value": b"hidden"}), RejectReason.MALFORMED),
        (foreign("n3", "x", b"z" * (CFG.max_value_bytes + 1), WALL0), RejectReason.TOO_LARGE),
    ],
)
def test_bad_records_are_counted_not_stored_not_forwarded(rec: Record, reason: RejectReason) -> None:
    a = make("n1")
    a.set_peers(0.0, [NodeId("n2")])
    assert a.on_message(1.0, NodeId("n2"), Push(records=(rec,))) == []
    assert a.stats.rejected == {reason: 1}
    assert len(a.store) == 0 and a.queued == 0  # type: ignore[arg-type]
    assert sends(a.on_message(1.0, NodeId("n2"), AeRecords(records=(rec,)))) == []
    assert a.stats.rejected == {reason: 2} and len(a.store) == 0  # type: ignore[arg-type]


def test_clock_drift_record_is_accepted_once_our_clock_catches_up() -> None:
    a = make()
    rec = foreign("n3", "x", b"1", WALL0 + 10)
    a.on_message(0.0, NodeId("n2"), Push(records=(rec,)))
    assert a.stats.rejected == {RejectReason.CLOCK_DRIFT: 1}
    a.on_message(6.0, NodeId("n2"), AeRecords(records=(rec,)))
    assert a.store.get("reg", "x") == rec


def test_local_write_after_seeing_a_remote_record_wins_over_it() -> None:
    a = make("n1")
    ahead = foreign("n9", "x", b"remote", WALL0 + 3)  # n9's clock is 3 s ahead (within drift)
    a.on_message(0.0, NodeId("n9"), Push(records=(ahead,)))
    _, mine = a.write(0.0, "reg", "x", b"local")
    assert mine.version.hlc > ahead.version.hlc and a.store.get("reg", "x") == mine


def test_restarted_core_continues_above_its_stored_versions() -> None:
    store = MemoryStore(CFG.buckets)
    a = make(store=store)
    _, old = a.write(50.0, "reg", "x", b"before")
    b = make(store=store)  # fresh core, same store; its clock is behind (wall went back)
    _, new = b.write(1.0, "reg", "x", b"after")
    assert new.version.hlc > old.version.hlc and store.get("reg", "x") == new


def test_expired_tombstone_deletes_but_is_never_stored() -> None:
    a = make()
    live = foreign("n3", "x", b"1", WALL0 - 100)
    a.on_message(0.0, NodeId("n2"), Push(records=(live,)))
    old_tomb = foreign("n3", "x", None, WALL0 - CFG.tombstone_grace_s - 1)
    out = a.on_message(0.0, NodeId("n2"), Push(records=(old_tomb,)))
    assert out == [Changed("reg", "x", old_tomb)]
    assert a.store.get("reg", "x") is None and a.stats.expired_tombstones == 1
    a.on_message(0.0, NodeId("n2"), Push(records=(old_tomb,)))  # nothing to delete now
    assert a.store.get("reg", "x") is None and a.stats.expired_tombstones == 2


def test_gc_collects_tombstones_after_grace_only() -> None:
    a = make()
    a.write(0.0, "reg", "gone", None)
    a.write(0.0, "reg", "kept", b"v")
    out = a.on_timer(CFG.tombstone_grace_s - 1, TimerKey.GC)
    assert (
        a.store.get("reg", "gone") is not None
        and Wake(CFG.tombstone_grace_s - 1 + CFG.gc_interval_s, TimerKey.GC) in out
    )
    a.on_timer(CFG.tombstone_grace_s + 1, TimerKey.GC)
    assert a.store.get("reg", "gone") is None and a.store.get("reg", "kept") is not None
    assert a.stats.tombstones_collected == 1


def _deliver(src: Replicator, dst: Replicator, effects: Sequence[Any], now: float, log: list[str]) -> None:
    """Carry Sends between two cores until quiet (a two-node, lossless, in-order network)."""
    queue = [(src, s) for s in sends(effects)]
    while queue:
        frm, s = queue.pop(0)
        to = dst if s.to == dst.self_id else src
        log.append(s.msg.kind)
        queue.extend((to, x) for x in sends(to.on_message(now, frm.self_id, s.msg)))


def test_anti_entropy_exchange_syncs_both_sides_in_one_round() -> None:
    a, b = make("n1"), make("n2")
    a.set_peers(0.0, [NodeId("n2")])
    b.set_peers(0.0, [NodeId("n1")])
    a.write_many(0.0, [("reg", f"a{i}", b"x") for i in range(300)])
    b.write_many(0.0, [("reg", f"b{i}", b"y") for i in range(200)])
    a.write(0.0, "reg", "both", b"old")
    b.write(0.1, "reg", "both", b"new")
    b.write(0.1, "nodes", "n2", b"me")
    log: list[str] = []
    _deliver(a, b, a.on_timer(1.0, TimerKey.ANTI_ENTROPY), 1.0, log)
    assert log[0] == "repl.ae.digest" and {"repl.ae.buckets", "repl.ae.entries", "repl.ae.records"} <= set(
        log
    )
    sa, sb = a.store, b.store
    assert isinstance(sa, MemoryStore) and isinstance(sb, MemoryStore)
    assert sa.all_records() == sb.all_records() and len(sa) == 502
    assert sa.get("reg", "both").value == b"new"  # type: ignore[union-attr]
    log.clear()
    _deliver(a, b, a.on_timer(2.0, TimerKey.ANTI_ENTROPY), 2.0, log)
    assert log == ["repl.ae.digest"]  # in sync: one message, no reply


@pytest.mark.parametrize("holder", ["initiator", "responder"])
def test_anti_entropy_syncs_a_bucket_bigger_than_one_message_over_rounds(holder: str) -> None:
    cfg = ReplicationConfig.test().model_copy(update={"buckets": 1, "max_ae_entries_per_msg": 100})
    a, b = make("n1", cfg=cfg), make("n2", cfg=cfg)
    a.set_peers(0.0, [NodeId("n2")])
    full, empty = (a, b) if holder == "initiator" else (b, a)
    for j in range(3):
        full.write_many(0.0, [("reg", f"k{j}-{i:03d}", b"v") for i in range(100)])
    empty.write(0.0, "reg", "k1-050x", b"between windows")  # a key inside a window's range
    sa, sb = a.store, b.store
    assert isinstance(sa, MemoryStore) and isinstance(sb, MemoryStore)
    for rnd in range(30):
        log: list[str] = []
        _deliver(a, b, a.on_timer(1.0 + rnd, TimerKey.ANTI_ENTROPY), 1.0 + rnd, log)
        if sa.all_records() == sb.all_records():
            break
    assert sa.all_records() == sb.all_records() and len(sa) == 301
    out = sends(a.on_message(40.0, NodeId("n2"), AeBuckets(table="reg", hashes=(b"\0" * 16,))))
    assert all(isinstance(s.msg, AeEntries) and len(s.msg.entries) <= 100 for s in out)
    assert {(s.msg.start is None, s.msg.end is None) for s in out if isinstance(s.msg, AeEntries)} <= {
        (True, False),
        (False, False),
        (False, True),
    }


@pytest.mark.parametrize("holder", ["initiator", "responder"])
def test_anti_entropy_catches_up_in_one_round_with_bounded_messages(holder: str) -> None:
    """Big buckets go in windows and records in chunks, all in the same round, each message
    within the entry, record and byte caps; a round budget below the gap takes more rounds."""
    cfg = ReplicationConfig.test().model_copy(update={
        "buckets": 4, "max_ae_entries_per_msg": 100, "max_ae_records_per_msg": 64, "max_ae_msg_bytes": 8192})
    a, b = make("n1", cfg=cfg), make("n2", cfg=cfg)
    a.set_peers(0.0, [NodeId("n2")])
    full, empty = (a, b) if holder == "initiator" else (b, a)
    for j in range(2):
        full.write_many(0.0, [("reg", f"k{j}-{i:03d}-" + "p" * 40, b"v" * 50) for i in range(500)])
    empty.write(0.0, "reg", "k0-250x", b"only here")
    sizes: list[tuple[str, int]] = []
    queue = [(a, s) for s in sends(a.on_timer(1.0, TimerKey.ANTI_ENTROPY))]
    while queue:
        frm, s = queue.pop(0)
        to = b if s.to == b.self_id else a
        sizes.append((s.msg.kind, len(encode(s.msg))))
        queue.extend((to, x) for x in sends(to.on_message(1.0, frm.self_id, s.msg)))
    sa, sb = a.store, b.store
    assert isinstance(sa, MemoryStore) and isinstance(sb, MemoryStore)
    assert sa.all_records() == sb.all_records() and len(sa) == 1001
    assert [k for k, _ in sizes].count("repl.ae.digest") == 1  # one round
    assert max(n for _, n in sizes) <= 8192 + 512, sizes  # the estimate is within a few hundred bytes
    assert sum(k == "repl.ae.records" for k, _ in sizes) >= 1000 // 64

    small = cfg.model_copy(update={"max_ae_entries_per_round": 100})
    c, d = make("n3", cfg=small), make("n4", cfg=small)
    c.set_peers(0.0, [NodeId("n4")])
    c.write_many(0.0, [("reg", f"x{i:04d}", b"v") for i in range(1000)])
    cs, ds = c.store, d.store
    assert isinstance(cs, MemoryStore) and isinstance(ds, MemoryStore)
    rounds = 0
    while cs.all_records() != ds.all_records():
        rounds += 1
        assert rounds < 200
        _deliver(c, d, c.on_timer(1.0 + rounds, TimerKey.ANTI_ENTROPY), 1.0 + rounds, [])
    assert rounds >= 1000 // 100


def test_malformed_anti_entropy_messages_are_counted_and_ignored() -> None:
    a = make()
    a.write(0.0, "reg", "x", b"v")
    assert a.on_message(0.0, NodeId("n2"), AeBuckets(table="reg", hashes=(b"0" * 16,))) == []  # wrong count
    other = (bucket_of("x", CFG.buckets) + 1) % CFG.buckets
    stray = Entry(key="x", hlc=1, origin="n2", tombstone=False, h=b"0" * 16)  # key not in a listed bucket
    assert a.on_message(0.0, NodeId("n2"), AeEntries(table="reg", buckets=(other,), entries=(stray,))) == []
    beyond = AeEntries(table="reg", buckets=(CFG.buckets + 1,), entries=())
    assert a.on_message(0.0, NodeId("n2"), beyond) == []
    inside = bucket_of("x", CFG.buckets)
    outside_window = Entry(key="x", hlc=1, origin="n2", tombstone=False, h=b"0" * 16)
    bad_window = AeEntries(table="reg", buckets=(inside,), start="y", entries=(outside_window,))
    assert a.on_message(0.0, NodeId("n2"), bad_window) == []
    assert a.stats.bad_messages == 4 and a.store.get("reg", "x") is not None


def test_joining_node_starts_anti_entropy_at_once() -> None:
    a = make()
    assert a.set_peers(5.0, [NodeId("n2")]) == [Wake(5.0, TimerKey.ANTI_ENTROPY)]
    assert a.set_peers(6.0, [NodeId("n2"), NodeId("n3")]) == []
    out = sends(a.on_timer(5.0, TimerKey.ANTI_ENTROPY))
    assert len(out) == 1 and isinstance(out[0].msg, AeDigest)


def test_store_bucket_count_must_match_config() -> None:
    with pytest.raises(ValueError, match="store.nbuckets"):
        make(store=MemoryStore(CFG.buckets * 2))


def test_unknown_timer_is_ignored() -> None:
    assert make().on_timer(0.0, "other") == []


def test_anti_entropy_collects_an_expired_tombstone_instead_of_sending_it() -> None:
    a = make("n1")
    a.write(0.0, "reg", "gone", None)
    a.write(0.0, "reg", "kept", b"v")
    later = CFG.tombstone_grace_s + 1  # before a's GC timer has run
    buckets = tuple(sorted({bucket_of("gone", CFG.buckets), bucket_of("kept", CFG.buckets)}))
    out = sends(a.on_message(later, NodeId("n2"), AeEntries(table="reg", buckets=buckets, entries=())))
    sent = [r.key for s in out if isinstance(s.msg, AeRecords) for r in s.msg.records]
    assert sent == ["kept"] and a.store.get("reg", "gone") is None
    assert a.stats.tombstones_collected == 1


def test_a_forged_record_inside_a_signed_batch_is_rejected_alone() -> None:
    src = make("n3")
    _, recs = src.write_many(0.0, [("reg", f"k{i}", b"v") for i in range(64)])
    a = make("n1")
    forged = recs[10].model_copy(update={"value": b"evil"})
    out = a.on_message(0.0, NodeId("n2"), AeRecords(records=(*recs[:10], forged, *recs[11:])))
    assert len(out) == 63 and a.stats.rejected == {RejectReason.BAD_SIGNATURE: 1}
    assert a.store.get("reg", "k10") is None and a.store.get("reg", "k11") == recs[11]


def test_a_whole_signed_batch_costs_one_signature_check() -> None:
    src = make("n3")
    _, recs = src.write_many(0.0, [("reg", f"k{i}", b"v") for i in range(1024)])
    a = make("n1")
    a.on_message(0.0, NodeId("n2"), AeRecords(records=tuple(recs)))
    assert len(a.store) == 1024  # type: ignore[arg-type]
    assert a.signature_checks == 1  # one ed25519 (here keyed-hash) verify for 1,024 records
