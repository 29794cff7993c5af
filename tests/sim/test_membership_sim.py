"""SWIM properties over many seeded simulator runs (memberlist LAN defaults unless a test says so).

Each run is a small cluster (5..8 nodes) over a few virtual minutes at most; bigger N lives in
bench/sim_membership.py. Seed counts are chosen so the whole file runs in a few seconds.
"""

from __future__ import annotations

import os

import pytest

from federation.membership import MemberState, SwimConfig, decode, encode, suspicion_max_timeout_s
from federation.sansio import NodeId
from tests.sim.membership_harness import SwimCluster

DEAD, ALIVE, LEFT = MemberState.DEAD, MemberState.ALIVE, MemberState.LEFT
LAN = SwimConfig.lan()
SLOW = os.environ.get("AIOSD_SLOW") == "1"


def _sizes(seed: int) -> int:
    return 5 + seed % 4


def _started(seed: int, **kw: object) -> SwimCluster:
    c = SwimCluster(n=_sizes(seed), seed=seed, **kw)  # type: ignore[arg-type]  # test-only kwargs
    c.start()
    c.net.run_until(c.converged, max_s=30)
    return c


def _detect_bound_s(n: int, cfg: SwimConfig) -> float:
    """Worst case from the protocol: the victim is probed within two shuffled rounds by someone,
    that probe fails one interval later, and an unconfirmed suspicion runs the Lifeguard maximum."""
    return 2 * n * cfg.probe_interval_s + suspicion_max_timeout_s(n, cfg) + cfg.suspicion_grace_s + 2.0


@pytest.mark.parametrize("seed", range(60))
def test_crashed_node_declared_dead_by_all_live_nodes(seed: int) -> None:
    c = _started(seed)
    c.net.run_for(c.rng.uniform(0, 3))
    victim = c.ids[seed % c.n]
    since = c.net.now
    c.crash(victim)
    others = [x for x in c.ids if x != victim]
    bound = _detect_bound_s(c.n, LAN)
    c.net.run_until(lambda: c.all_see([victim], DEAD, others), max_s=bound)
    assert c.time_all_saw(victim, DEAD, since, others) <= bound
    assert [v for v in c.verdicts if v.state == DEAD and v.node != victim] == []


@pytest.mark.parametrize("seed", range(60))
def test_no_live_node_declared_dead_at_10pct_loss(seed: int) -> None:
    c = SwimCluster(n=_sizes(seed), seed=seed, loss=0.10)
    c.start()
    c.net.run_for(60.0)
    assert [v for v in c.verdicts if v.state == DEAD] == []
    c.net.run_until(c.converged, max_s=30)


@pytest.mark.parametrize("seed", range(40))
def test_membership_converges_after_partition_heals(seed: int) -> None:
    c = _started(seed)
    side = c.rng.randint(1, c.n - 1)
    a, b = c.ids[:side], c.ids[side:]
    c.net.partition(a, b)
    c.net.run_for(c.rng.uniform(5.0, 60.0))
    c.net.heal()
    # A failed member is retried every reconnect interval; then suspicion + refutation settle it.
    bound = 2 * LAN.reconnect_interval_s + suspicion_max_timeout_s(c.n, LAN)
    c.net.run_until(c.converged, max_s=bound)
    c.net.run_for(10.0)
    assert c.converged_now()


@pytest.mark.parametrize("seed", range(60))
def test_stalled_node_is_not_declared_dead(seed: int) -> None:
    c = _started(seed)
    c.net.run_for(c.rng.uniform(1, 3))
    victim = c.ids[seed % c.n]
    c.net.stall(victim, 5.0)
    c.net.run_for(15.0)
    assert [v for v in c.verdicts if v.state == DEAD] == []
    assert c.converged_now()


def test_stall_is_noticed_so_the_stall_test_can_fail() -> None:
    """The stall is long enough to raise suspicion (and a longer one kills): the property is not vacuous."""
    c = _started(1)
    c.net.stall(c.ids[0], 5.0)
    c.net.run_for(10.0)
    assert any(v.node == c.ids[0] and v.state == MemberState.SUSPECT for v in c.verdicts)
    c2 = _started(1)
    c2.net.stall(c2.ids[0], 40.0)
    c2.net.run_for(41.0)
    assert any(v.node == c2.ids[0] and v.state == DEAD for v in c2.verdicts)
    c2.net.run_until(c2.converged, max_s=10)  # ...and it refutes "dead" when it wakes


@pytest.mark.parametrize("seed", range(40))
def test_half_the_nodes_restart_at_once_and_none_stays_dead(seed: int) -> None:
    c = _started(seed)
    c.net.run_for(c.rng.uniform(0, 5))
    restarted = c.ids[: c.n // 2]
    for nid in restarted:
        c.crash(nid)
    c.net.run_for(c.rng.choice([0.0, 3.0, 40.0]))  # back at once, while suspected, or long dead
    for nid in restarted:
        c.start_node(nid)  # same id, a startup incarnation above anything of its old life
    c.net.run_until(c.converged, max_s=30)
    since = c.net.now
    c.net.run_for(30.0)
    assert c.converged_now()
    assert [v for v in c.verdicts if v.state == DEAD and v.at >= since] == []
    for nid in restarted:
        assert all(c.nodes[o].swim.member(nid).incarnation >= 10**6 for o in c.ids)  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", range(10))
def test_every_message_round_trips_through_the_msgpack_codec(seed: int) -> None:
    c = SwimCluster(n=6, seed=seed, codec=True, loss=0.05, dup=0.05)
    c.start()
    c.net.run_until(c.converged, max_s=30)
    victim = c.ids[seed % 6]
    c.crash(victim)
    others = [x for x in c.ids if x != victim]
    c.net.run_until(lambda: c.all_see([victim], DEAD, others), max_s=_detect_bound_s(6, LAN))
    assert c.net.stats.bytes_sent > 0
    assert all(c.nodes[o].swim.counters.messages_in > 0 for o in others)
    assert [v for v in c.verdicts if v.state == DEAD and v.node != victim] == []


def test_codec_preserves_every_message_the_cores_send() -> None:
    c = SwimCluster(n=5, seed=3)
    seen: list[object] = []
    orig = c.net._send

    def spy(src: NodeId, dst: NodeId, msg: object) -> None:
        seen.append(msg)
        orig(src, dst, msg)

    c.net._send = spy  # type: ignore[method-assign]  # observe traffic without changing it
    c.start()
    c.net.run_for(40.0)
    c.net.stall(c.ids[1], 6.0)
    c.crash(c.ids[2])
    c.net.run_for(30.0)
    kinds = {type(m).__name__ for m in seen}
    assert {"Ping", "Ack", "PingReq", "Gossip", "Sync", "SyncReply", "Nack"} <= kinds
    for m in seen:
        assert decode(encode(m)) == m  # type: ignore[arg-type]  # every message is a SwimMsg


@pytest.mark.parametrize("seed", range(10))
def test_graceful_leave_is_left_everywhere_and_never_dead(seed: int) -> None:
    c = _started(seed)
    leaver = c.ids[seed % c.n]
    c.leave(leaver)
    others = [x for x in c.ids if x != leaver]
    c.net.run_until(lambda: c.all_see([leaver], LEFT, others), max_s=5.0)
    c.crash(leaver)
    c.net.run_for(60.0)
    assert [v for v in c.verdicts if v.state == DEAD] == []


def test_dead_members_are_reaped() -> None:
    c = _started(2)
    victim = c.ids[0]
    c.crash(victim)
    c.net.run_for(_detect_bound_s(c.n, LAN) + LAN.dead_reap_s + 2 * c.n * LAN.probe_interval_s)
    assert all(c.nodes[o].swim.member(victim) is None for o in c.ids[1:])


def test_same_seed_same_history() -> None:
    def trace(seed: int) -> list[tuple[float, str, str, str]]:
        c = SwimCluster(n=6, seed=seed, loss=0.1)
        c.start()
        c.net.run_for(10)
        c.crash(c.ids[0])
        c.net.run_for(30)
        return [(v.at, v.observer, v.node, v.state.value) for v in c.verdicts]

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="set AIOSD_SLOW=1")
@pytest.mark.parametrize("seed", range(5))
def test_large_cluster_detects_crash_without_false_dead(seed: int) -> None:
    c = SwimCluster(n=50, seed=seed, loss=0.05)
    c.start()
    c.net.run_until(c.converged, max_s=60)
    victim = c.ids[0]
    c.crash(victim)
    others = c.ids[1:]
    c.net.run_until(lambda: c.all_see([victim], DEAD, others), max_s=_detect_bound_s(50, LAN))
    assert [v for v in c.verdicts if v.state == DEAD and v.node != victim] == []


@pytest.mark.parametrize("seed", range(10))
def test_test_profile_detects_crashes_five_times_faster(seed: int) -> None:
    cfg = SwimConfig.test()
    c = SwimCluster(n=_sizes(seed), seed=seed, cfg=cfg)
    c.start()
    c.net.run_until(c.converged, max_s=10)
    victim = c.ids[0]
    c.crash(victim)
    others = c.ids[1:]
    c.net.run_until(lambda: c.all_see([victim], DEAD, others), max_s=_detect_bound_s(c.n, cfg))
    assert [v for v in c.verdicts if v.state == DEAD and v.node != victim] == []
