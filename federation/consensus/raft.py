"""The Raft core as a sans-IO state machine: elections, replication, commit, snapshots, membership.

Durability: the core writes through the injected `RaftStorage` and calls `storage.flush()`
before it returns effects (and before applying committed entries), so term, vote and log are
durable before any Send that depends on them leaves. Drivers must carry effects out in order.
Cold start: membership lives in the log/snapshot (CONFIG entries), never in a peer file; a
restarted voter reloads it and campaigns among those node ids; addresses are the driver's job.
Not here: IO, clocks, randomness (an injected `random.Random`), the application state.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence

from federation.consensus.config import RaftConfig
from federation.consensus.core import CMD, CONF, NOOP, PendingSnapshot, member_config
from federation.consensus.errors import (
    Busy,
    ProposeError,
    StorageCorrupt,
    TooLarge,
)
from federation.consensus.events import (
    Committed,
    Effect,
    RaftStats,
    RaftStatus,
    Role,
    RoleChanged,
    StateMachine,
    TimerKey,
)
from federation.consensus.follower import FollowerSide
from federation.consensus.leader import LeaderSide
from federation.consensus.log import HardState, RaftStorage, Snapshot
from federation.consensus.membership import ConfigLog, MemberConfig
from federation.consensus.messages import (
    RAFT_MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    Entry,
    InstallSnapshot,
    VoteRequest,
    VoteResponse,
)
from federation.consensus.progress import Progress, ProgressMode, majority
from federation.sansio import NodeId, Send, Wake

log = logging.getLogger(__name__)


class Raft(LeaderSide, FollowerSide):
    """One node's Raft state machine. Every public method returns the effects to carry out."""

    def __init__(
        self,
        self_id: NodeId,
        config: RaftConfig,
        storage: RaftStorage,
        state_machine: StateMachine,
        rng: random.Random,
    ) -> None:
        self.id = self_id
        self.cfg = config
        self._st = storage
        self._sm = state_machine
        self._rng = rng
        self.stats = RaftStats()
        hs = storage.hard_state()
        self._term = hs.term
        self._voted_for = hs.voted_for
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._out: list[Effect] = []
        snap = storage.snapshot()
        base = 0
        voters: frozenset[NodeId] = frozenset()
        learners: frozenset[NodeId] = frozenset()
        if snap is not None:
            state_machine.restore(snap.index, snap.data)
            base, voters, learners = snap.index, frozenset(snap.voters), frozenset(snap.learners)
        self._commit = base
        self._applied = base
        self._confs = ConfigLog(base, MemberConfig(voters, learners))
        last = storage.last_index()
        lo = storage.first_index()
        while lo <= last:
            batch = storage.entries(lo, last + 1, 1 << 24)
            for e in batch:
                if e.type == CONF:
                    self._confs.add(e.index, member_config(e))
            lo = batch[-1].index + 1
        # election timer
        self._election_deadline = 0.0
        self._election_wake: float | None = None
        self._last_leader_contact = -1e18
        self._votes: set[NodeId] = set()
        # leader state
        self._progress: dict[NodeId, Progress] = {}
        self._alive: frozenset[NodeId] = frozenset()
        self._gone: frozenset[NodeId] = frozenset()
        self._became_leader_at = 0.0
        # follower state
        self._pending_snap: PendingSnapshot | None = None

    # ----- public surface ---------------------------------------------------------------
    @property
    def current_term(self) -> int:
        """The newest term this node has seen (for fencing commands of older terms)."""
        return self._term

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> NodeId | None:
        return self._leader

    def quorum_active(self, now: float) -> bool:
        """True if this node leads and heard from a majority of voters within an election timeout."""
        return self._role is Role.LEADER and (not self.cfg.check_quorum or self._quorum_active(now))

    def status(self) -> RaftStatus:
        conf = self._config()
        return RaftStatus(
            role=self._role,
            term=self._term,
            leader=self._leader,
            commit_index=self._commit,
            last_applied=self._applied,
            last_index=self._st.last_index(),
            voters=conf.voters,
            learners=conf.learners,
        )

    def start(self, now: float) -> list[Effect]:
        """Arm the election timer (a restarted node starts as a follower of nobody)."""
        self._election_wake = None
        self._reset_election(now)
        return self._finish()

    def on_timer(self, now: float, key: object) -> list[Effect]:
        if key == TimerKey.ELECTION:
            self._on_election_timer(now)
        elif key == TimerKey.HEARTBEAT:
            self._on_heartbeat(now)
        return self._finish()

    def on_message(self, now: float, src: NodeId, msg: object) -> list[Effect]:
        """Handle one decoded message from `src` (the transport authenticated `src`)."""
        if not isinstance(msg, RAFT_MESSAGE_TYPES) or src == self.id:
            self.stats.dropped_foreign += 1
            return self._finish()
        if isinstance(msg, VoteRequest):
            self._on_vote_request(now, src, msg)
        elif isinstance(msg, VoteResponse):
            self._on_vote_response(now, src, msg)
        elif isinstance(msg, AppendEntries):
            self._on_append(now, src, msg)
        elif isinstance(msg, AppendResponse):
            self._on_append_response(now, src, msg)
        elif isinstance(msg, InstallSnapshot):
            self._on_install_snapshot(now, src, msg)
        else:
            self._on_snapshot_response(now, src, msg)
        return self._finish()

    def propose(self, now: float, command: bytes) -> tuple[list[Effect], int | ProposeError]:
        """Append one command if this node leads with a quorum; returns its index or why not.

        The write is acknowledged when `Committed(index, term=current_term)` comes out of this
        node; a `Committed` at that index with another term means it was lost to a new leader.
        """
        effects, result = self.propose_batch(now, [command])
        return effects, result

    def propose_batch(self, now: float, commands: Sequence[bytes]) -> tuple[list[Effect], int | ProposeError]:
        """Append several commands as one batch (one flush); returns the first one's index."""
        if not commands:
            raise ValueError("commands: must not be empty")
        err = self._write_refusal(now)
        if err is None:
            for c in commands:
                if len(c) > self.cfg.max_command_bytes:
                    err = TooLarge(len(c), self.cfg.max_command_bytes)
                    break
        if err is None:
            uncommitted = self._st.last_index() - self._commit
            if uncommitted + len(commands) > self.cfg.max_uncommitted:
                err = Busy(uncommitted, self.cfg.max_uncommitted)
        if err is not None:
            return self._finish(), err
        first = self._st.last_index() + 1
        entries = [Entry(index=first + i, term=self._term, type=CMD, data=c) for i, c in enumerate(commands)]
        self._append_as_leader(now, entries)
        return self._finish(), first

    def change_membership(
        self, now: float, voters: Iterable[NodeId], learners: Iterable[NodeId] = ()
    ) -> tuple[list[Effect], int | ProposeError]:
        """Propose a whole new config that differs from the current one by at most one voter.

        Raises:
            ValueError: empty voters, a node both voter and learner, too many members, or
                more than one voter added/removed at once (we did wrong).
        """
        new = MemberConfig(frozenset(voters), frozenset(learners) - frozenset(voters))
        if not new.voters:
            raise ValueError("voters: must not be empty")
        if len(new.voters) + len(new.learners) > self.cfg.max_members:
            raise ValueError(f"learners: more than max_members={self.cfg.max_members} members")
        if len(new.voters ^ self._config().voters) > 1:
            raise ValueError("voters: change one voter at a time")
        err = self._write_refusal(now) or self._change_refusal()
        if err is not None:
            return self._finish(), err
        index = self._propose_config(now, new)
        return self._finish(), index

    def set_members(self, now: float, alive: Iterable[NodeId], gone: Iterable[NodeId] = ()) -> list[Effect]:
        """Tell the core which nodes of *this cluster* membership (SWIM) believes alive, and
        which left it for good (`gone`: a clean leave or a removal).

        A leader then adds them as learners and keeps min(max_voters, live members) voters,
        replacing dead voters by caught-up learners and removing gone ones, one committed change at a time.
        """
        self._gone = frozenset(sorted(gone)[: self.cfg.max_members])
        self._alive = frozenset(sorted(alive)[: self.cfg.max_members]) - self._gone
        if self._role is Role.LEADER:
            self._manage_members(now)
        return self._finish()

    # ----- timers -----------------------------------------------------------------------
    def _random_timeout(self) -> float:
        return self._rng.uniform(self.cfg.election_timeout_min_s, self.cfg.election_timeout_max_s)

    def _reset_election(self, now: float) -> None:
        timeout = self._random_timeout()
        if self.id not in self._config().voters:
            # A learner never campaigns; the timer only decides when it forgets the leader, who beats
            # it every learner_heartbeat_interval_s: allow two missed beats. A promoted voter gets the
            # short deadline on the leader's next append.
            timeout += 2 * self.cfg.learner_heartbeat_interval_s
        self._election_deadline = now + timeout
        wake = self._election_wake
        if wake is None or wake > self._election_deadline or wake < now:
            self._election_wake = self._election_deadline
            self._out.append(Wake(self._election_deadline, TimerKey.ELECTION))

    def _on_election_timer(self, now: float) -> None:
        self._election_wake = None
        if self._role is Role.LEADER:
            return
        if now < self._election_deadline:
            self._election_wake = self._election_deadline
            self._out.append(Wake(self._election_deadline, TimerKey.ELECTION))
            return
        if self._leader is not None:
            self._set_role(Role.FOLLOWER, None)
        self._reset_election(now)
        if self.id not in self._config().voters:
            return  # learners and removed nodes never campaign
        self._campaign(now, pre=self.cfg.pre_vote)

    def _on_heartbeat(self, now: float) -> None:
        if self._role is not Role.LEADER:
            return
        self._out.append(Wake(now + self.cfg.heartbeat_interval_s, TimerKey.HEARTBEAT))
        if self.cfg.check_quorum and not self._quorum_active(now):
            self.stats.step_downs_no_quorum += 1
            log.info("raft leader lost quorum", extra={"node": self.id, "term": self._term})
            self._become_follower(now, self._term, None)
            return
        stale = 2 * self.cfg.heartbeat_interval_s
        voters = self._config().voters
        last = self._st.last_index()
        for peer, pr in self._progress.items():
            if pr.mode is ProgressMode.SNAPSHOT:
                if now - pr.snap_sent_at >= stale:
                    self._send_snapshot_chunk(now, peer, pr)
                continue
            if pr.inflight and now - pr.inflight[0][1] >= stale:
                pr.to_probe(pr.match + 1)  # appends were lost: resend from the last known match
            elif (pr.mode is ProgressMode.REPLICATE and not pr.inflight and pr.next > last
                  and not self._beat_due(now, pr, learner=peer not in voters)):
                continue  # an idle peer that heard from us recently (or a learner): skip this beat
            self._replicate(now, peer, pr, heartbeat=True)
        self._manage_members(now)

    def _beat_due(self, now: float, pr: Progress, *, learner: bool) -> bool:
        """An idle peer needs a heartbeat once its interval has passed since our last append to it.

        Voters: every tick, unless an append went out within the last half tick (it reset their
        election timer just as well). Learners: every learner_heartbeat_interval_s. Half a tick of
        slack keeps timer jitter from pushing a beat to the following tick.
        """
        tick = self.cfg.heartbeat_interval_s
        interval = max(tick, self.cfg.learner_heartbeat_interval_s) if learner else tick
        return now - pr.last_sent_at >= interval - tick / 2

    # ----- elections --------------------------------------------------------------------
    def _campaign(self, now: float, *, pre: bool) -> None:
        self.stats.elections += 1
        if pre:
            self._role = Role.PRE_CANDIDATE
            term = self._term + 1
        else:
            self._term += 1
            self._voted_for = self.id
            self._st.set_hard_state(HardState(self._term, self.id))
            self._role = Role.CANDIDATE
            term = self._term
        self._votes = {self.id}
        self._out.append(RoleChanged(self._role, self._term, None))
        if self._tally(now):
            return
        req = VoteRequest(
            term=term,
            last_log_index=self._st.last_index(),
            last_log_term=self._last_term(),
            pre_vote=pre,
        )
        for v in sorted(self._config().voters):
            if v != self.id:
                self._out.append(Send(v, req))

    def _tally(self, now: float) -> bool:
        """Act on a majority of (pre-)votes; True if the role moved on."""
        voters = self._config().voters
        if len(self._votes & voters) < majority(len(voters)):
            return False
        if self._role is Role.PRE_CANDIDATE:
            self._campaign(now, pre=False)
        else:
            self._become_leader(now)
        return True

    def _in_lease(self, now: float) -> bool:
        """True while we follow a live leader (or lead): vote requests are then ignored (thesis §4.2.3)."""
        if not self.cfg.check_quorum:
            return False
        if self._role is Role.LEADER:
            return True
        return self._leader is not None and now - self._last_leader_contact < self.cfg.election_timeout_min_s

    def _log_ok(self, last_index: int, last_term: int) -> bool:
        """Candidate's log is at least as up to date as ours (Raft §5.4.1)."""
        mine = self._last_term()
        return last_term > mine or (last_term == mine and last_index >= self._st.last_index())

    def _on_vote_request(self, now: float, src: NodeId, m: VoteRequest) -> None:
        if m.pre_vote:
            grant = (
                m.term > self._term
                and not self._in_lease(now)
                and self._log_ok(m.last_log_index, m.last_log_term)
            )
            self._out.append(
                Send(src, VoteResponse(term=m.term if grant else self._term, granted=grant, pre_vote=True))
            )
            return
        if m.term > self._term and self._in_lease(now):
            self.stats.dropped_stale += 1
            return  # a disruptive candidate (e.g. a removed voter): ignore without adopting its term
        if m.term > self._term:
            self._become_follower(now, m.term, None)
        grant = (
            m.term == self._term
            and self._voted_for in (None, src)
            and self._log_ok(m.last_log_index, m.last_log_term)
        )
        if grant:
            self._voted_for = src
            self._st.set_hard_state(HardState(self._term, src))
            self._reset_election(now)
        self._out.append(Send(src, VoteResponse(term=self._term, granted=grant)))

    def _on_vote_response(self, now: float, src: NodeId, m: VoteResponse) -> None:
        if m.term > self._term and not (m.pre_vote and m.granted):
            self._become_follower(now, m.term, None)
            return
        if not m.granted:
            return
        expected = (self._role is Role.PRE_CANDIDATE and m.pre_vote and m.term == self._term + 1) or (
            self._role is Role.CANDIDATE and not m.pre_vote and m.term == self._term
        )
        if not expected:
            self.stats.dropped_stale += 1
        elif src not in self._config().voters:
            self.stats.dropped_invalid += 1  # only voters' votes count; keeps the set bounded
        else:
            self._votes.add(src)
            self._tally(now)

    def _become_leader(self, now: float) -> None:
        self._role = Role.LEADER
        self._leader = self.id
        self._became_leader_at = now
        self._progress = {}
        self._sync_progress(now)
        log.info("raft leader elected", extra={"node": self.id, "term": self._term})
        self._out.append(RoleChanged(Role.LEADER, self._term, self.id))
        self._out.append(Wake(now + self.cfg.heartbeat_interval_s, TimerKey.HEARTBEAT))
        # A no-op of the new term lets earlier entries commit by counting (Raft §5.4.2, §8).
        self._append_as_leader(now, [Entry(index=self._st.last_index() + 1, term=self._term, type=NOOP)])

    def _become_follower(self, now: float, term: int, leader: NodeId | None) -> None:
        if term > self._term:
            self._term = term
            self._voted_for = None
            self._st.set_hard_state(HardState(term, None))
        was_leader = self._role is Role.LEADER
        self._progress = {}
        self._votes = set()
        if was_leader:
            self._out.append(Wake(float("inf"), TimerKey.HEARTBEAT))
        self._set_role(Role.FOLLOWER, leader)
        self._reset_election(now)

    def _set_role(self, role: Role, leader: NodeId | None) -> None:
        changed = role is not self._role or leader != self._leader
        self._role = role
        self._leader = leader
        if changed:
            self._out.append(RoleChanged(role, self._term, leader))

    # ----- applying and compaction ------------------------------------------------------
    def _apply_committed(self, now: float) -> None:
        if self._applied >= self._commit:
            return
        self._st.flush()  # the application may persist effects: the log must be durable first
        while self._applied < self._commit:
            batch = self._st.entries(self._applied + 1, self._commit + 1, 1 << 24)
            for e in batch:
                if e.type == CMD:
                    self._sm.apply(e.index, e.data)
                    self._out.append(Committed(e.index, e.term, e.data))
                self._applied = e.index
        if self._applied - (self._st.first_index() - 1) >= self.cfg.snapshot_threshold:
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        index = self._applied
        term = self._st.term_at(index)
        if term is None:
            raise StorageCorrupt(f"applied entry {index} has no term in the log")
        conf = self._confs.at(index)
        self._st.save_snapshot(
            Snapshot(
                index, term, tuple(sorted(conf.voters)), tuple(sorted(conf.learners)), self._sm.snapshot()
            )
        )
        self._confs.compact(index, conf)
        self.stats.snapshots_taken += 1

    # ----- helpers ----------------------------------------------------------------------
    def _finish(self) -> list[Effect]:
        self._st.flush()
        out, self._out = self._out, []
        return out


__all__ = ["Raft"]
