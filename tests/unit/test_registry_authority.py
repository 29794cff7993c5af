"""Registry write authority and origin signatures, through the real Replicator and LMDB store."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiosd.metrics.service import capacity_changed, cluster_aggregates, flatten, nest, prometheus_text
from aiosd.registry.service import ADMIN_TABLES, TABLES, PeerCerts, encode_value, rules
from federation.certs import NodeCert, issue_cert
from federation.identity import CaKey, NodeKey
from federation.replication import (
    Draft,
    Record,
    RejectReason,
    ReplicationConfig,
    Replicator,
    TableRules,
    Version,
    WriteRefused,
    sign_batch,
)
from federation.replication.lmdb_store import LmdbRecordStore
from federation.replication.wire import Push
from federation.sansio import NodeId
from storage import Store

NOW = 1_800_000_000.0


def _cert(ca: CaKey, key: NodeKey, roles: list[str]) -> NodeCert:
    return issue_cert(ca, key.public_bytes, network_id=ca.network_id, cluster="c1", roles=roles,  # type: ignore[arg-type]  # literal roles
                      ttl_s=3600, now=NOW)


class Node:
    def __init__(self, path: Path, key: NodeKey, cert: NodeCert) -> None:
        self.key, self.cert, self.id = key, cert, NodeId(str(key.node_id))
        self.store = Store.open(path)
        self.certs = PeerCerts(cert)
        self.core = Replicator(self.id, ReplicationConfig.test(), LmdbRecordStore(self.store), key.sign,
                               self.certs.verify, TableRules(rules(self.certs)), random.Random(1),
                               wall_offset_s=NOW)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[Node, Node, Node]]:
    ca = CaKey.generate()
    ka, km, ke = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    admin = Node(tmp_path / "a", ka, _cert(ca, ka, ["admin", "member"]))
    member = Node(tmp_path / "m", km, _cert(ca, km, ["member"]))
    evil = Node(tmp_path / "e", ke, _cert(ca, ke, ["member"]))
    for n in (admin, member, evil):
        for other in (admin, member, evil):
            n.certs.learn(other.cert)
    yield admin, member, evil
    for n in (admin, member, evil):
        n.store.close()


def test_local_writes_follow_the_table_rules(net: tuple[Node, Node, Node]) -> None:
    admin, member, _ = net
    assert set(ADMIN_TABLES) < set(TABLES)
    admin.core.write(0.0, "specs", "s", encode_value({"a": 1}))
    member.core.write(0.0, "nodes", member.id, encode_value({"a": 1}))
    member.core.write(0.0, "nodes", f"{member.id}/gpus", encode_value({"a": 1}))
    member.core.write(0.0, "tasks", "t1", encode_value({"a": 1}))
    for table, key in [("specs", "s"), ("nodes", admin.id), ("metrics", admin.id), ("unknown", "x")]:
        with pytest.raises(WriteRefused):
            member.core.write(0.0, table, key, encode_value({"a": 1}))
    assert member.core.store.get("specs", "s") is None


def test_merge_refuses_forged_unsigned_and_unauthorised_records(net: tuple[Node, Node, Node]) -> None:
    admin, member, evil = net
    _, good = admin.core.write(0.0, "specs", "s", encode_value({"ok": True}))
    hlc = good.version.hlc + 10

    def signed(table: str, key: str, origin: str) -> Record:
        d = Draft(table, key, encode_value({"evil": True}), Version(hlc=hlc, origin=origin), False)
        return sign_batch([d], evil.key.sign)[0]

    no_authority = signed("specs", "s", evil.id)
    forged = signed("specs", "s", admin.id)
    own = signed("nodes", evil.id, evil.id)
    bad_sig = own.model_copy(update={"proof": own.proof.model_copy(update={"sig": bytes(64)})})
    unknown_origin = signed("nodes", "stranger", "stranger")
    member.core.on_message(0.0, evil.id, Push(records=(good,)))
    for r in (no_authority, forged, bad_sig, unknown_origin):
        assert member.core.on_message(0.0, evil.id, Push(records=(r,))) == []
    st = member.core.stats.rejected
    assert st == {RejectReason.NO_AUTHORITY: 1, RejectReason.BAD_SIGNATURE: 3}
    assert member.core.store.get("specs", "s") == good and member.core.store.get("nodes", evil.id) is None
    assert member.core.queued == 1  # only the good record is forwarded
    # The genuine record of evil's own node is accepted.
    member.core.on_message(0.0, evil.id, Push(records=(own,)))
    assert member.core.store.get("nodes", evil.id) == own


def test_admin_role_comes_from_the_origins_certificate(net: tuple[Node, Node, Node]) -> None:
    admin, member, _ = net
    assert admin.certs.is_admin(admin.id) and not admin.certs.is_admin(member.id)
    assert not admin.certs.is_admin(NodeId("nobody")) and not admin.certs.verify(NodeId("nobody"), b"m", bytes(64))


def test_metric_helpers() -> None:
    flat = {"vcpu.load_15m": 0.5, "gpu.totalFreeMem": 100.0, "memory.totalMem": 10.0}
    doc = nest(flat)
    assert doc == {"vcpu": {"load_15m": 0.5}, "gpu": {"totalFreeMem": 100.0}, "memory": {"totalMem": 10.0}}
    assert flatten(doc) == flat
    agg = cluster_aggregates([{"cluster": "c", **doc}, {"cluster": "c", **nest({**flat, "vcpu.load_15m": 1.5})}])
    assert agg["c"] == {"nodes": 2.0, "vcpu.load_15m": 1.0, "gpu.totalFreeMem": 200.0, "memory.totalMem": 20.0}
    text = prometheus_text("n1", flat, [], {"replication.written": 3.0})
    assert 'aiosd_load15{node="n1"} 0.5' in text and "# TYPE aiosd_replication_written_total counter" in text
    assert 'aiosd_memory_size_bytes{node="n1"} 10485760.0' in text


def test_summary_is_republished_early_only_when_capacity_moves() -> None:
    old = {"memory.freeMem": 1000.0, "gpu.totalFreeMem": 0.0, "vcpu.load_1m": 0.1, "network.rxBytesTotal": 5.0}
    assert capacity_changed(None, old)
    # Loads, counters and small moves wait for the periodic refresh.
    assert not capacity_changed(old, {**old, "memory.freeMem": 950.0, "vcpu.load_1m": 3.0, "network.rxBytesTotal": 9e9})
    assert capacity_changed(old, {**old, "memory.freeMem": 850.0})
    assert capacity_changed(old, {**old, "gpu.totalFreeMem": 8000.0})
