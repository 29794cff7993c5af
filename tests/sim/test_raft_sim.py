"""Raft in the simulator: seeded runs with crashes, restarts, partitions, stalls, loss, duplication
and reordering, checked by the history checker (tests/sim/raft_history.py); plus scenarios for
pre-vote, check-quorum, cold start, automatic voter management and snapshot catch-up.

Default: 500 seeded random runs (~20-40 s on a busy 2-core box). AIOSD_SLOW=1 adds 3,000 longer runs.
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from federation.consensus import HardState, InMemoryRaftStorage, NoQuorum, NotLeader, RaftConfig
from federation.sansio import NodeId
from tests.sim.raft_history import RaftCluster

SLOW = os.environ.get("AIOSD_SLOW") == "1"
LIVENESS_S = 15.0  # virtual seconds for a healed, fully live cluster to have a committing leader


def run_random(seed: int, *, phases: int) -> RaftCluster:
    rng = random.Random(seed)
    n = rng.choice((3, 3, 5))
    ids = [f"n{i}" for i in range(n)]
    auto = rng.random() < 0.3  # one founder; the others join through automatic voter management
    cfg = RaftConfig.test()
    if auto and n == 5 and rng.random() < 0.5:
        cfg = dataclasses.replace(cfg, max_voters=3)  # leaves learners to promote
    hi = rng.choice((0.005, 0.02, 0.05))
    c = RaftCluster(
        seed,
        ids,
        cfg,
        founders=ids[:1] if auto else ids,
        loss=rng.choice((0.0, 0.01, 0.05, 0.1)),
        dup=rng.choice((0.0, 0.02, 0.05)),
        delay_s=(0.001, hi),
    )
    members = 0.2 if auto else 0.0
    c.run(1.0, propose_every_s=0.05, members_every_s=members)
    for _ in range(phases):
        act = rng.random()
        up = c.up()
        down = [x for x in c.ids if x not in up]
        if act < 0.25 and len(up) > 1:
            c.crash(rng.choice(up))
        elif act < 0.45 and down:
            c.restart(rng.choice(down))
        elif act < 0.65:
            shuffled = list(c.ids)
            rng.shuffle(shuffled)
            cut = rng.randint(1, n - 1)
            c.partition(shuffled[:cut], shuffled[cut:])
        elif act < 0.8:
            c.heal()
        elif act < 0.9:
            c.stall(rng.choice(c.ids), rng.uniform(0.1, 1.0))
        c.run(rng.uniform(0.2, 1.5), propose_every_s=0.05, members_every_s=members)
    c.heal()
    for x in c.ids:
        if not c.net.is_up(x):
            c.restart(x)
    # Liveness: the healed, fully live cluster has a leader that commits a new write within the
    # bound. A write handed to a leader that is deposed before it commits may be lost (Raft
    # promises nothing for unacknowledged writes), so the client retries, as a real one would.
    deadline = c.net.now + LIVENESS_S
    while True:
        c.run_until(lambda: c.committing_leader() is not None, max_s=LIVENESS_S, members_every_s=members)
        leader = c.committing_leader()
        assert leader is not None
        result = c.propose(at=leader)
        if isinstance(result, int):
            final = result

            def acked(i: int = final) -> bool:
                return i in c.history.acked

            try:
                c.run_until(acked, max_s=1.0, members_every_s=members)
                break
            except TimeoutError:
                pass
        assert c.net.now < deadline, f"seed {seed}: no write committed within {LIVENESS_S}s of healing"
    everyone = frozenset(c.ids)

    def all_members_applied() -> bool:
        lead = c.committing_leader()
        if lead is None:
            return False
        st = c.nodes[lead].raft.status()
        return (st.voters | st.learners) == everyone and c.converged(c.ids)

    c.run_until(all_members_applied, max_s=LIVENESS_S, members_every_s=members or 0.2)
    problems = c.history.check_final(c.machines)
    assert not problems, f"seed {seed}: " + "; ".join(problems[:5])
    return c


@pytest.mark.parametrize("seed", range(500))
def test_random_faults_keep_raft_safe_and_live(seed: int) -> None:
    run_random(seed, phases=5)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="long simulation: set AIOSD_SLOW=1")
@pytest.mark.parametrize("seed", range(10_000, 13_000) if SLOW else range(10_000, 10_001))
def test_random_faults_long_runs(seed: int) -> None:
    run_random(seed, phases=25)


def test_random_runs_exercise_the_interesting_paths() -> None:
    """The fault mix must actually produce leader changes, snapshots, refusals and minority checks."""
    elections = snapshots = installs = acked = checks = 0
    refusals: dict[str, int] = {}
    for seed in range(40):
        c = run_random(seed, phases=5)
        elections += len(c.history.leader_elected_at)
        acked += len(c.history.acked)
        checks += c.history.minority_checks
        for n in c.ids:
            snapshots += c.nodes[n].raft.stats.snapshots_taken
            installs += c.nodes[n].raft.stats.snapshots_installed
        for k, v in c.refusals.items():
            refusals[k] = refusals.get(k, 0) + v
    assert elections > 60  # 82 with these seeds
    assert acked > 1500  # 3080
    assert snapshots > 100 and installs > 20  # 268 and 94
    assert checks > 1500  # 3212
    assert refusals.get("NoQuorum", 0) > 0


def _stable(seed: int = 1, n: int = 3, **kw: object) -> RaftCluster:
    c = RaftCluster(seed, [f"n{i}" for i in range(n)], kw.pop("cfg", RaftConfig.test()), **kw)  # type: ignore[arg-type]  # test helper
    c.run_until(lambda: c.committing_leader() is not None, max_s=10)
    return c


def test_prevote_rejoining_partitioned_node_does_not_disrupt_leader() -> None:
    c = _stable(n=3)
    leader = c.committing_leader()
    assert leader is not None
    term = c.nodes[leader].raft.current_term
    lonely = next(x for x in c.ids if x != leader)
    c.partition([lonely], [x for x in c.ids if x != lonely])
    c.run(5.0, propose_every_s=0.1)  # the lonely node times out again and again
    assert c.nodes[lonely].raft.current_term == term  # pre-vote never won: no term inflation
    c.heal()
    c.run(3.0, propose_every_s=0.1)
    assert c.committing_leader() == leader
    assert c.nodes[leader].raft.current_term == term
    assert [t for _, _, t in c.history.leader_elected_at] == [term]


def test_without_prevote_a_rejoining_node_deposes_the_leader() -> None:
    """The control for the test above: the same scenario without pre-vote/check-quorum disrupts."""
    cfg = dataclasses.replace(RaftConfig.test(), pre_vote=False, check_quorum=False)
    c = _stable(n=3, cfg=cfg)
    leader = c.committing_leader()
    assert leader is not None
    term = c.nodes[leader].raft.current_term
    lonely = next(x for x in c.ids if x != leader)
    c.partition([lonely], [x for x in c.ids if x != lonely])
    c.run(5.0)
    assert c.nodes[lonely].raft.current_term > term + 3
    c.heal()
    c.run(3.0)
    assert c.nodes[leader].raft.current_term > term


def test_minority_leader_refuses_writes_and_never_commits() -> None:
    c = _stable(n=5)
    old = c.committing_leader()
    assert old is not None
    others = [x for x in c.ids if x != old]
    c.partition([old, others[0]], others[1:])
    minority_cmds = []
    for _ in range(5):
        r = c.propose(at=old)
        if isinstance(r, int):
            minority_cmds.append(r)
        c.run(0.05)
    c.run_until(lambda: c.committing_leader() in others[1:], max_s=10)
    c.run(1.0)  # check-quorum: the old leader stepped down
    r = c.propose(at=old)
    assert isinstance(r, NoQuorum), r
    assert "no quorum" in str(r)
    assert isinstance(c.propose(at=others[0]), NoQuorum)
    new = c.committing_leader()
    assert new is not None and isinstance(c.propose(at=new), int)
    c.heal()
    c.run_until(lambda: c.converged(c.ids) and c.nodes[old].raft.leader == new, max_s=10)
    assert not any(
        i in c.history.acked and c.history.proposals.get(c.history.acked[i]) == (old, i)
        for i in minority_cmds
    )
    assert c.history.minority_checks > 0
    assert not c.history.check_final(c.machines)
    r = c.propose(at=old)
    assert isinstance(r, NotLeader) and r.leader_hint == new


def test_cold_start_of_every_node_elects_from_persisted_state() -> None:
    c = _stable(n=5)
    c.run(2.0, propose_every_s=0.02)
    acked = len(c.history.acked)
    assert acked > 50
    for x in c.ids:
        c.crash(x)
    c.run(1.0)
    for x in c.ids:
        c.restart(x)  # storage kept; no peer file: voters come from the log / snapshot
    c.run_until(lambda: c.committing_leader() is not None, max_s=10)
    c.run(1.0, propose_every_s=0.05)
    c.run_until(lambda: c.converged(c.ids), max_s=10)
    assert len(c.history.acked) > acked
    assert not c.history.check_final(c.machines)


class ForgetfulStorage(InMemoryRaftStorage):
    """A broken storage that loses the vote across restarts (the bug the next test must catch)."""

    def hard_state(self) -> HardState:
        return HardState(super().hard_state().term, None)


def _vote_crash_run(seed: int, storage: type[InMemoryRaftStorage]) -> RaftCluster:
    """Crash and restart every voter the moment it grants a vote, with split votes made likely."""
    cfg = dataclasses.replace(
        RaftConfig.test(), pre_vote=False, check_quorum=False, election_timeout_max_s=0.32
    )
    c = RaftCluster(seed, ["a", "b", "c", "d", "e"], cfg, delay_s=(0.001, 0.03), storage_factory=storage)
    rng = random.Random(seed)
    seen = [0]

    def reboot_last_voter() -> bool:  # runs between events: the crash lands right after the vote
        if len(c.history.votes) > seen[0]:
            seen[0] = len(c.history.votes)
            voter = list(c.history.votes)[-1][0]
            c.crash(voter)
            c.restart(voter)
        return False

    for _ in range(30):
        c.net.run_until(reboot_last_voter, max_s=rng.uniform(0.05, 0.5), raise_on_timeout=False)
        for lead in c.leaders():
            c.crash(lead)
            c.restart(lead)
    assert seen[0] > 30
    return c


@pytest.mark.parametrize("seed", range(3))
def test_restarted_voters_never_vote_twice_in_a_term(seed: int) -> None:
    c = _vote_crash_run(seed, InMemoryRaftStorage)
    assert not c.history.violations


def test_history_catches_a_voter_that_forgets_its_vote() -> None:
    """The control: the same run with a storage that loses votes is flagged as double voting."""
    found = [v for s in range(3) for v in _vote_crash_run(s, ForgetfulStorage).history.violations]
    assert any(v.startswith("double vote") for v in found)


def test_leader_grows_to_max_voters_and_replaces_dead_voters() -> None:
    ids = [f"n{i}" for i in range(7)]
    c = RaftCluster(5, ids, RaftConfig.test(), founders=["n0"])

    def voters() -> frozenset[NodeId]:
        lead = c.committing_leader()
        return c.nodes[lead].raft.status().voters if lead else frozenset()

    def learners() -> frozenset[NodeId]:
        lead = c.committing_leader()
        return c.nodes[lead].raft.status().learners if lead else frozenset()

    c.run_until(lambda: len(voters()) == 5 and len(learners()) == 2, max_s=20, members_every_s=0.2)
    lead = c.committing_leader()
    assert lead is not None
    st = c.nodes[lead].raft.status()
    assert len(st.learners) == 2 and not (st.voters & st.learners)
    dead = sorted(st.voters - {lead})[:2]
    for d in dead:
        c.crash(d)
    c.run_until(lambda: len(voters()) == 5 and not (voters() & set(dead)), max_s=20, members_every_s=0.2)
    lead = c.committing_leader()
    assert lead is not None
    st = c.nodes[lead].raft.status()
    assert st.voters.isdisjoint(dead) and st.learners.isdisjoint(dead)
    r = c.propose(at=lead)
    assert isinstance(r, int)
    c.run_until(lambda: r in c.history.acked, max_s=5, members_every_s=0.2)
    assert not c.history.violations


def test_lagging_node_catches_up_through_install_snapshot() -> None:
    cfg = RaftConfig.test()
    c = _stable(n=3, cfg=cfg)
    leader = c.committing_leader()
    assert leader is not None
    lag = next(x for x in c.ids if x != leader)
    c.crash(lag)
    c.run(3.0, propose_every_s=0.01)
    assert c.storages[leader].first_index() > cfg.snapshot_threshold
    c.restart(lag)
    c.run_until(lambda: c.converged(c.ids), max_s=10)
    assert c.nodes[lag].raft.stats.snapshots_installed >= 1
    assert not c.history.check_final(c.machines)
