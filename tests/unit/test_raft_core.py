"""The Raft core driven by hand: no network, no event loop, every message delivered explicitly."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from federation.consensus import (
    AppendEntries,
    AppendResponse,
    Busy,
    ChangeInProgress,
    Committed,
    Entry,
    InMemoryRaftStorage,
    InstallSnapshot,
    MembershipChanged,
    NoQuorum,
    NotLeader,
    Raft,
    RaftConfig,
    Role,
    RoleChanged,
    SnapshotResponse,
    TimerKey,
    TooLarge,
    VoteRequest,
    VoteResponse,
    bootstrap,
)
from federation.sansio import NodeId, Send, Wake
from tests.sim.raft_history import ListStateMachine

CFG = RaftConfig.test()
A, B, C, D = NodeId("a"), NodeId("b"), NodeId("c"), NodeId("d")


class Bench:
    """A few cores and a FIFO of in-flight messages; the test decides what is delivered."""

    def __init__(
        self, ids: list[NodeId], founders: list[NodeId] | None = None, cfg: RaftConfig = CFG
    ) -> None:
        self.cfg = cfg
        self.storages = {n: InMemoryRaftStorage() for n in ids}
        for n in founders if founders is not None else ids:
            bootstrap(self.storages[n], founders if founders is not None else ids)
        self.nodes: dict[NodeId, Raft] = {}
        self.sms: dict[NodeId, ListStateMachine] = {}
        self.wire: list[tuple[NodeId, NodeId, Any]] = []
        self.notes: list[tuple[NodeId, Any]] = []
        self.now = 0.0
        for n in ids:
            self.boot(n)

    def boot(self, n: NodeId) -> None:
        self.sms[n] = ListStateMachine()
        self.nodes[n] = Raft(n, self.cfg, self.storages[n], self.sms[n], random.Random(n))
        self.take(n, self.nodes[n].start(self.now))

    def take(self, n: NodeId, effects: list[Any]) -> None:
        assert self.storages[n].unflushed == 0
        for e in effects:
            if isinstance(e, Send):
                self.wire.append((n, e.to, e.msg))
            elif not isinstance(e, Wake):
                self.notes.append((n, e))

    def deliver(self, *, drop: set[NodeId] = frozenset(), limit: int = 10_000) -> None:  # type: ignore[assignment]  # frozenset is a read-only set
        for _ in range(limit):
            if not self.wire:
                return
            src, dst, msg = self.wire.pop(0)
            if src in drop or dst in drop:
                continue
            self.take(dst, self.nodes[dst].on_message(self.now, src, msg))
        raise AssertionError("message storm")

    def timeout(self, n: NodeId) -> None:
        self.now += CFG.election_timeout_max_s + 0.01
        self.take(n, self.nodes[n].on_timer(self.now, TimerKey.ELECTION))

    def tick(self, n: NodeId) -> None:
        self.now += CFG.heartbeat_interval_s
        self.take(n, self.nodes[n].on_timer(self.now, TimerKey.HEARTBEAT))

    def elect(self, n: NodeId) -> None:
        self.timeout(n)
        self.deliver()
        assert self.nodes[n].role is Role.LEADER

    def propose(self, n: NodeId, cmd: bytes) -> int:
        effects, r = self.nodes[n].propose(self.now, cmd)
        self.take(n, effects)
        assert isinstance(r, int), r
        return r

    def committed(self, n: NodeId) -> list[bytes]:
        return [e.command for who, e in self.notes if who == n and isinstance(e, Committed)]


def test_single_voter_elects_itself_and_commits() -> None:
    b = Bench([A])
    b.timeout(A)
    assert b.nodes[A].role is Role.LEADER and b.nodes[A].current_term == 1
    b.propose(A, b"x")
    assert b.committed(A) == [b"x"] and b.sms[A].applied == {3: b"x"}  # 1 = config, 2 = leader no-op


def test_three_voters_replicate_and_apply_everywhere() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    for i in range(20):
        b.propose(A, b"c%d" % i)
    b.deliver()
    b.tick(A)
    b.deliver()
    for n in (A, B, C):
        assert b.committed(n) == [b"c%d" % i for i in range(20)]
    assert b.nodes[B].leader == A and b.nodes[B].status().commit_index == b.nodes[A].status().commit_index


def test_follower_and_learner_refuse_writes_with_a_hint() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    b.tick(A)
    b.deliver()
    _, r = b.nodes[B].propose(b.now, b"x")
    assert isinstance(r, NotLeader) and r.leader_hint == A and "a" in str(r)
    _, r = b.nodes[A].propose(b.now, b"x" * (CFG.max_command_bytes + 1))
    assert isinstance(r, TooLarge) and "max_command_bytes" in str(r)


def test_leader_refuses_past_max_uncommitted() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    _, r = b.nodes[A].propose_batch(b.now, [b"x"] * (CFG.max_uncommitted + 1))
    assert isinstance(r, Busy)
    assert b.storages[A].last_index() == 2  # nothing appended


def test_vote_is_durable_across_restart() -> None:
    b = Bench([A, B, C])
    b.take(C, b.nodes[C].on_message(b.now, A, VoteRequest(term=5, last_log_index=1, last_log_term=0)))
    assert b.wire[-1] == (C, A, VoteResponse(term=5, granted=True))
    b.boot(C)  # crash + restart: a fresh core on the same storage
    b.take(C, b.nodes[C].on_message(b.now, B, VoteRequest(term=5, last_log_index=9, last_log_term=0)))
    assert b.wire[-1] == (C, B, VoteResponse(term=5, granted=False))
    assert b.nodes[C].current_term == 5


def test_vote_refused_to_a_candidate_with_an_older_log() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    b.propose(A, b"x")
    b.deliver()
    b.now += CFG.election_timeout_min_s + 0.01  # past the leader lease, so C considers the request
    b.take(C, b.nodes[C].on_message(b.now, B, VoteRequest(term=9, last_log_index=1, last_log_term=0)))
    assert b.wire[-1][2].granted is False  # §5.4.1: B's log is behind C's


def test_pre_vote_changes_no_term_and_is_refused_while_a_leader_is_live() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    b.tick(A)
    b.deliver()
    term = b.nodes[B].current_term
    b.take(
        B,
        b.nodes[B].on_message(
            b.now, C, VoteRequest(term=term + 1, last_log_index=9, last_log_term=term, pre_vote=True)
        ),
    )
    assert b.wire[-1][2] == VoteResponse(term=term, granted=False, pre_vote=True)
    b.now += CFG.election_timeout_min_s + 0.01  # leader silent for a while: the lease ends
    b.take(
        B,
        b.nodes[B].on_message(
            b.now, C, VoteRequest(term=term + 1, last_log_index=9, last_log_term=term, pre_vote=True)
        ),
    )
    assert b.wire[-1][2] == VoteResponse(term=term + 1, granted=True, pre_vote=True)
    assert b.nodes[B].current_term == term  # a pre-vote never moves the term


def test_partitioned_pre_candidate_does_not_inflate_its_term() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    term = b.nodes[C].current_term
    for _ in range(5):
        b.timeout(C)
        b.deliver(drop={C})
    assert b.nodes[C].current_term == term and b.nodes[C].role is Role.PRE_CANDIDATE


def test_stale_term_append_is_refused_and_tells_the_newer_term() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    b.deliver()
    b.take(
        B, b.nodes[B].on_message(b.now, C, AppendEntries(term=0, prev_index=0, prev_term=0, leader_commit=0))
    )
    _, dst, resp = b.wire[-1]
    assert (dst, resp.success, resp.term) == (C, False, 1)


def test_foreign_and_self_messages_are_dropped() -> None:
    b = Bench([A, B])
    assert b.nodes[A].on_message(b.now, B, "hello") == []
    assert b.nodes[A].on_message(b.now, A, VoteRequest(term=9, last_log_index=0, last_log_term=0)) == []
    assert b.nodes[A].stats.dropped_foreign == 2 and b.nodes[A].current_term == 0


def test_divergent_follower_suffix_is_replaced_with_fast_backoff() -> None:
    b = Bench([A, B, C])
    # B holds 30 uncommitted entries of term 1 that no one else has.
    b.storages[B].append([Entry(index=i, term=1, data=b"old") for i in range(2, 32)])
    b.storages[B].set_hard_state(dataclasses.replace(b.storages[B].hard_state(), term=1))
    b.storages[B].flush()
    b.boot(B)
    b.take(A, b.nodes[A].on_message(b.now, C, VoteRequest(term=2, last_log_index=1, last_log_term=0)))
    b.wire.clear()
    b.timeout(A)
    b.deliver(drop={B})
    assert b.nodes[A].role is Role.LEADER and b.nodes[A].current_term == 3
    b.propose(A, b"new")
    b.deliver(drop={B})
    rounds = 0
    while b.storages[B].term_at(2) != 3 and rounds < 10:
        b.tick(A)
        b.deliver()
        rounds += 1
    assert rounds < 5  # one conflict-term hint skips all 30 entries, not one per round trip
    assert [e.data for e in b.storages[B].entries(2, b.storages[B].last_index() + 1, 1 << 20)] == [
        b"",
        b"new",
    ]
    assert b"old" not in b.sms[B].applied.values()


def test_entries_of_an_earlier_term_commit_only_with_one_of_the_current_term() -> None:
    """Raft §5.4.2 (figure 8): counting replicas of an old-term entry never commits it."""
    b = Bench([A, B, C])
    b.elect(A)  # term 1
    b.deliver()
    # A appends an entry in term 1 that reaches nobody, then hears of term 5 and steps down.
    b.propose(A, b"t1")
    b.wire.clear()
    ra = b.nodes[A]
    b.take(A, ra.on_message(b.now, B, AppendResponse(term=5, success=False, prev_index=0, match_index=0)))
    assert ra.status().role is Role.FOLLOWER
    b.timeout(A)
    b.wire.clear()
    b.take(A, ra.on_message(b.now, B, VoteResponse(term=6, granted=True, pre_vote=True)))
    assert ra.status().role is Role.CANDIDATE and ra.current_term == 6
    b.wire.clear()
    b.take(A, ra.on_message(b.now, B, VoteResponse(term=6, granted=True)))
    assert ra.status().role is Role.LEADER
    noop = b.storages[A].last_index()
    sends = [(d, m) for s, d, m in b.wire if isinstance(m, AppendEntries) and m.entries]
    b.wire.clear()
    # B acknowledges only the term-1 entry (index noop-1): still not committed.
    b.take(
        A, ra.on_message(b.now, B, AppendResponse(term=6, success=True, prev_index=2, match_index=noop - 1))
    )
    assert ra.status().commit_index < noop - 1
    b.take(A, ra.on_message(b.now, B, AppendResponse(term=6, success=True, prev_index=2, match_index=noop)))
    assert ra.status().commit_index == noop and b"t1" in b.committed(A)
    assert sends


def test_lagging_follower_gets_a_chunked_snapshot() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    b.deliver()
    for i in range(CFG.snapshot_threshold * 2):
        b.propose(A, b"cmd%03d" % i)
        b.deliver(drop={C})
    assert b.storages[A].snapshot() is not None and b.storages[A].first_index() > 2
    snap = b.storages[A].snapshot()
    assert snap is not None and len(snap.data) > 3 * CFG.snapshot_chunk_bytes  # several chunks
    for _ in range(200):
        b.tick(A)
        b.deliver()
        if b.nodes[C].status().last_applied == b.nodes[A].status().last_applied:
            break
    assert b.sms[C].applied == b.sms[A].applied
    assert b.nodes[C].stats.snapshots_installed == 1


def test_out_of_order_snapshot_chunk_asks_for_the_right_offset() -> None:
    b = Bench([A, B])
    m = InstallSnapshot(term=1, last_index=50, last_term=1, voters=(A, B), offset=0, data=b"abc", done=False)
    b.take(B, b.nodes[B].on_message(b.now, A, m))
    assert b.wire[-1][2] == SnapshotResponse(term=1, last_index=50, next_offset=3, done=False)
    skip = m.model_copy(update={"offset": 10, "data": b"zz"})
    b.take(B, b.nodes[B].on_message(b.now, A, skip))
    assert b.wire[-1][2].next_offset == 3 and not b.wire[-1][2].done
    assert b.nodes[B].status().commit_index == 0


def test_voter_changes_go_one_at_a_time() -> None:
    b = Bench([A, B, C, D], founders=[A, B, C])
    b.elect(A)
    b.deliver()
    with pytest.raises(ValueError, match="one voter at a time"):
        b.nodes[A].change_membership(b.now, [A, B, C, D, NodeId("e")])
    effects, idx = b.nodes[A].change_membership(b.now, [A, B, C], [D])
    b.take(A, effects)
    assert isinstance(idx, int)
    effects, r = b.nodes[A].change_membership(b.now, [A, B, C, D])
    assert isinstance(r, ChangeInProgress)
    b.deliver()
    b.tick(A)
    b.deliver()
    assert b.nodes[D].status().learners == {D} and b.nodes[D].status().commit_index >= idx
    for _ in range(int(CFG.election_timeout_max_s / CFG.heartbeat_interval_s) + 2):
        b.tick(A)  # the leader stays live, but D hears nothing past its election timeout
        b.deliver(drop={D})
    b.take(D, b.nodes[D].on_timer(b.now, TimerKey.ELECTION))
    # learners never campaign
    assert b.nodes[D].role is Role.FOLLOWER and not [w for w in b.wire if w[0] == D]
    effects, idx2 = b.nodes[A].change_membership(b.now, [A, B, C, D])
    assert isinstance(idx2, int)
    b.take(A, effects)
    b.deliver()
    assert b.nodes[A].status().voters == {A, B, C, D}
    assert any(isinstance(e, MembershipChanged) and e.voters == {A, B, C, D} for n, e in b.notes if n == D)


def test_leader_removed_from_voters_steps_down_after_commit() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    b.deliver()
    effects, idx = b.nodes[A].change_membership(b.now, [B, C])
    assert isinstance(idx, int)
    b.take(A, effects)
    b.deliver()
    assert b.nodes[A].role is Role.FOLLOWER
    assert any(isinstance(e, RoleChanged) and e.role is Role.FOLLOWER for n, e in b.notes if n == A)


def test_leader_without_quorum_steps_down_and_refuses_writes() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    b.deliver()
    for _ in range(int(CFG.election_timeout_max_s / CFG.heartbeat_interval_s) + 2):
        b.tick(A)
        b.deliver(drop={B, C})
    assert b.nodes[A].role is Role.FOLLOWER and b.nodes[A].stats.step_downs_no_quorum == 1
    _, r = b.nodes[A].propose(b.now, b"x")
    assert isinstance(r, NoQuorum) and str(r).startswith("no quorum")


def test_restart_reloads_membership_from_the_log_and_reapplies_on_commit() -> None:
    b = Bench([A, B, C])
    b.elect(A)
    for i in range(5):
        b.propose(A, b"%d" % i)
    b.deliver()
    b.tick(A)
    b.deliver()
    for n in (A, B, C):
        b.boot(n)  # cold start: all three restart from storage only
    assert b.nodes[B].status().voters == {A, B, C} and b.nodes[B].status().last_applied == 0
    b.wire.clear()
    b.elect(B)
    b.tick(B)
    b.deliver()
    assert b.sms[C].applied == {3: b"0", 4: b"1", 5: b"2", 6: b"3", 7: b"4"}


def test_idle_learners_are_beaten_every_learner_interval_and_keep_their_leader() -> None:
    b = Bench([A, B, C, D], founders=[A, B, C])
    b.elect(A)
    b.deliver()
    effects, _ = b.nodes[A].change_membership(b.now, [A, B, C], [D])
    b.take(A, effects)
    b.deliver()
    b.tick(A)
    b.deliver()
    assert b.nodes[D].status().learners == {D} and b.nodes[D].leader == A
    ticks = round(2 * CFG.learner_heartbeat_interval_s / CFG.heartbeat_interval_s)
    beats = {B: 0, D: 0}
    for _ in range(ticks):
        b.tick(A)
        for _, dst, msg in b.wire:
            if dst in beats and isinstance(msg, AppendEntries):
                beats[dst] += 1
        b.deliver()
        b.take(D, b.nodes[D].on_timer(b.now, TimerKey.ELECTION))  # D's timer allows for the slow beat
        assert b.nodes[D].leader == A
    assert beats[B] == ticks and beats[D] == 2  # voters every tick, learners once a second
    effects, idx2 = b.nodes[A].change_membership(b.now, [A, B, C, D])  # a beaten learner is promotable
    assert isinstance(idx2, int)
