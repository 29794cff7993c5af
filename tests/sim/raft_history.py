"""Raft history checker and a simulated Raft cluster that feeds it (shared by tests and bench).

`History` records what nodes *did* (effects: leaders elected, entries applied, votes granted,
client acknowledgements) and checks Raft's guarantees against that record, not against logs:
Election Safety, State Machine Safety, one vote per term per node (across restarts), no commit
decided without a majority of voters holding the entry, and every acknowledged entry applied everywhere.
`RaftCluster` runs Raft cores on `SimNet` with crash/restart that keep each node's storage.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from federation.consensus import (
    Committed,
    InMemoryRaftStorage,
    MembershipChanged,
    ProposeError,
    Raft,
    RaftConfig,
    Role,
    RoleChanged,
    VoteResponse,
    bootstrap,
)
from federation.sansio import NodeId, Send
from tests.sim.net import SimNet


class ListStateMachine:
    """The application: the applied (index, command) sequence; snapshot = that sequence."""

    def __init__(self) -> None:
        self.applied: dict[int, bytes] = {}
        self.last = 0

    def apply(self, index: int, command: bytes) -> None:
        if index <= self.last:
            raise AssertionError(f"applied index {index} after {self.last}")
        self.applied[index] = command
        self.last = index

    def snapshot(self) -> bytes:
        packed: bytes = msgpack.packb([self.last, list(self.applied.items())], use_bin_type=True)
        return packed

    def restore(self, index: int, data: bytes) -> None:
        last, items = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if last > index:
            raise AssertionError(f"snapshot for index {index} holds state up to {last}")
        self.applied = {int(i): bytes(c) for i, c in items}
        self.last = index  # entries up to `index` that were not commands (no-op, config) left no trace


@dataclass
class History:
    """Everything nodes did that the guarantees talk about, and the violations found so far."""

    leaders: dict[int, NodeId] = field(default_factory=dict)
    applied: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    votes: dict[tuple[NodeId, int], NodeId] = field(default_factory=dict)
    proposals: dict[bytes, tuple[NodeId, int]] = field(default_factory=dict)
    acked: dict[int, bytes] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    leader_elected_at: list[tuple[float, NodeId, int]] = field(default_factory=list)
    ack_times: dict[bytes, float] = field(default_factory=dict)
    roles: dict[NodeId, Role] = field(default_factory=dict)
    voters: dict[NodeId, frozenset[NodeId]] = field(default_factory=dict)
    minority_checks: int = 0
    # (index, term) -> nodes whose storage holds that entry; set by the cluster
    replicas: Callable[[int, int], set[NodeId]] | None = None

    def on_effect(self, now: float, nid: NodeId, eff: Any) -> None:
        if isinstance(eff, MembershipChanged):
            self.voters[nid] = eff.voters  # effects come in order: this is the config of later commits
        elif isinstance(eff, RoleChanged):
            self.roles[nid] = eff.role
            if eff.role is Role.LEADER:
                prev = self.leaders.setdefault(eff.term, nid)
                if prev != nid:
                    self.violations.append(f"election safety: term {eff.term} has leaders {prev} and {nid}")
                self.leader_elected_at.append((now, nid, eff.term))
        elif isinstance(eff, Committed):
            seen = self.applied.setdefault(eff.index, (eff.term, eff.command))
            if seen != (eff.term, eff.command):
                self.violations.append(
                    f"state machine safety: {nid} applied {(eff.term, eff.command)!r} at {eff.index}, "
                    f"another node applied {seen!r}"
                )
            prop = self.proposals.get(eff.command)
            if prop == (nid, eff.index):
                self.acked[eff.index] = eff.command
                self.ack_times.setdefault(eff.command, now)
            if self.roles.get(nid) is Role.LEADER:
                self._check_majority(now, nid, eff.index, eff.term)

    def _check_majority(self, now: float, nid: NodeId, index: int, term: int) -> None:
        """A leader's commit of `index` means a majority of voters durably hold that entry."""
        if self.replicas is None:
            return
        holders = self.replicas(index, term)
        voters = self.voters.get(nid, frozenset())
        self.minority_checks += 1
        if len(voters & holders) < len(voters) // 2 + 1:
            self.violations.append(
                f"commit without majority: {nid} committed {index} held only by {sorted(holders)} of {sorted(voters)}"
            )

    def on_send(self, nid: NodeId, send: Send[Any]) -> None:
        msg = send.msg
        if isinstance(msg, VoteResponse) and msg.granted and not msg.pre_vote:
            prev = self.votes.setdefault((nid, msg.term), send.to)
            if prev != send.to:
                self.violations.append(
                    f"double vote: {nid} voted for {prev} and {send.to} in term {msg.term}"
                )

    def on_crash(self, now: float, nid: NodeId) -> None:
        self.roles.pop(nid, None)

    def check_final(self, machines: dict[NodeId, ListStateMachine]) -> list[str]:
        """Every acknowledged entry is in every given node's applied sequence, and all agree."""
        out = list(self.violations)
        for nid, sm in sorted(machines.items()):
            for index, cmd in self.acked.items():
                if sm.applied.get(index) != cmd:
                    out.append(f"lost ack: {nid} has {sm.applied.get(index)!r} at acknowledged index {index}")
            for index, cmd in sm.applied.items():
                seen = self.applied.get(index)
                if seen is not None and seen[1] != cmd:
                    out.append(f"divergence: {nid} holds {cmd!r} at {index}, applied elsewhere {seen[1]!r}")
        return out


class RaftSimNet(SimNet):
    """SimNet plus a way to feed effects of calls made from outside (proposals, set_members)."""

    def inject(self, nid: NodeId, effects: list[Any]) -> None:
        self._apply(nid, effects)

    def _step(self) -> None:
        # SimNet re-queues a stalled node's timer at the stall's end but keeps the old deadline
        # in `_timers`, so the timer is later taken for replaced and lost (a leader's heartbeat
        # then stops for good). Move the deadline along with the event (reported to net.py's owner).
        ev = self._queue[0]
        if ev.kind == "timer" and ev.node not in self._down and ev.epoch == self._epoch.get(ev.node):
            stalled = self._stalled_until.get(ev.node, 0.0)
            key = (ev.node, ev.payload)
            if stalled > max(self.now, ev.at) and self._timers.get(key) == ev.at:
                self._timers[key] = stalled
        super()._step()


class SimNode:
    """Adapts a Raft core to SimNet, asserting that every call returns with its writes flushed."""

    def __init__(self, nid: NodeId, raft: Raft, storage: InMemoryRaftStorage, history: History) -> None:
        self.nid, self.raft, self.storage, self.history = nid, raft, storage, history

    def _check(self, effects: list[Any]) -> list[Any]:
        if self.storage.unflushed:
            self.history.violations.append(f"{self.nid}: returned effects with unflushed writes")
        for e in effects:
            if isinstance(e, Send):
                self.history.on_send(self.nid, e)
        return effects

    def start(self, now: float) -> list[Any]:
        return self._check(self.raft.start(now))

    def on_message(self, now: float, src: NodeId, msg: Any) -> list[Any]:
        return self._check(self.raft.on_message(now, src, msg))

    def on_timer(self, now: float, key: Hashable) -> list[Any]:
        return self._check(self.raft.on_timer(now, key))


class RaftCluster:
    """N Raft nodes on a seeded SimNet; nodes crash and restart with their storage kept."""

    def __init__(
        self,
        seed: int,
        ids: Iterable[str],
        cfg: RaftConfig,
        *,
        founders: Iterable[str] | None = None,
        loss: float = 0.0,
        dup: float = 0.0,
        delay_s: tuple[float, float] = (0.001, 0.005),
        storage_factory: Callable[[], InMemoryRaftStorage] = InMemoryRaftStorage,
    ) -> None:
        self.seed = seed
        self.cfg = cfg
        self.ids = [NodeId(i) for i in ids]
        self.net = RaftSimNet(seed, loss=loss, dup=dup, delay_s=delay_s)
        self.history = History()
        self.history.replicas = self._replicas
        self.net.observers.append(self.history.on_effect)
        self.storages = {n: storage_factory() for n in self.ids}
        self.machines: dict[NodeId, ListStateMachine] = {}
        self.nodes: dict[NodeId, SimNode] = {}
        self.rng = random.Random(f"client:{seed}")
        self._epoch: dict[NodeId, int] = {}
        self._cmd_seq = 0
        self.refusals: dict[str, int] = {}
        voters = [NodeId(f) for f in (founders if founders is not None else self.ids)]
        for n in voters:
            bootstrap(self.storages[n], voters)
        for n in self.ids:
            self._boot(n)

    def _boot(self, nid: NodeId) -> None:
        epoch = self._epoch[nid] = self._epoch.get(nid, 0) + 1
        sm = ListStateMachine()
        raft = Raft(nid, self.cfg, self.storages[nid], sm, random.Random(f"{self.seed}:{nid}:{epoch}"))
        self.machines[nid] = sm
        self.history.voters[nid] = raft.status().voters
        self.nodes[nid] = SimNode(nid, raft, self.storages[nid], self.history)
        self.net.add(nid, self.nodes[nid])

    # ----- faults -----------------------------------------------------------------------
    def crash(self, nid: NodeId) -> None:
        self.net.crash(nid)
        self.history.on_crash(self.net.now, nid)

    def restart(self, nid: NodeId) -> None:
        self._boot(nid)

    def partition(self, *groups: Iterable[NodeId]) -> None:
        self.net.partition(*groups)

    def stall(self, nid: NodeId, duration_s: float) -> None:
        self.net.stall(nid, duration_s)

    def heal(self) -> None:
        self.net.heal()

    def up(self) -> list[NodeId]:
        return [n for n in self.ids if self.net.is_up(n)]

    def reachable(self, nid: NodeId) -> set[NodeId]:
        return {n for n in self.up() if n != nid and self.net.can_talk(nid, n) and self.net.can_talk(n, nid)}

    def _replicas(self, index: int, term: int) -> set[NodeId]:
        holders = set()
        for n, st in self.storages.items():
            snap = st.snapshot()
            if st.term_at(index) == term or (snap is not None and snap.index >= index):
                holders.add(n)  # a snapshot covers only committed entries
        return holders

    # ----- client -----------------------------------------------------------------------
    def leaders(self) -> list[NodeId]:
        return [n for n in self.up() if self.nodes[n].raft.role is Role.LEADER]

    def committing_leader(self) -> NodeId | None:
        """A live leader with quorum that has committed an entry of its own term (it serves writes)."""
        for n in self.leaders():
            if not self.nodes[n].raft.quorum_active(self.net.now):
                continue
            st = self.nodes[n].raft.status()
            if self.storages[n].term_at(st.commit_index) == st.term:
                return n
        return None

    def propose(self, at: NodeId | None = None) -> int | ProposeError | None:
        """Propose a fresh unique command at `at` (default: a random node claiming leadership)."""
        if at is None:
            claimed = self.leaders()
            if not claimed:
                return None
            at = self.rng.choice(claimed)
        self._cmd_seq += 1
        cmd = f"c{self._cmd_seq}".encode()
        effects, result = self.nodes[at].raft.propose(self.net.now, cmd)
        if isinstance(result, int):
            self.history.proposals[cmd] = (at, result)
        else:
            self.refusals[type(result).__name__] = self.refusals.get(type(result).__name__, 0) + 1
        self.net.inject(at, self.nodes[at]._check(effects))
        return result

    def tell_members(self) -> None:
        """What SWIM would report: each live node sees the nodes it can reach."""
        for n in self.up():
            alive = self.reachable(n) | {n}
            self.net.inject(n, self.nodes[n]._check(self.nodes[n].raft.set_members(self.net.now, alive)))

    def run(self, duration_s: float, *, propose_every_s: float = 0.0, members_every_s: float = 0.0) -> None:
        """Advance virtual time, proposing (and telling membership) at fixed virtual intervals."""
        end = self.net.now + duration_s
        step = min(x for x in (propose_every_s, members_every_s, duration_s) if x > 0)
        next_members = self.net.now
        while self.net.now < end - 1e-9:
            if propose_every_s:
                self.propose()
            if members_every_s and self.net.now >= next_members:
                self.tell_members()
                next_members = self.net.now + members_every_s
            self.net.run_for(min(step, end - self.net.now))

    def run_until(self, pred: Callable[[], bool], *, max_s: float, members_every_s: float = 0.0) -> float:
        """Run until pred() (checked between events), telling membership periodically; raises on timeout."""
        start = self.net.now
        while True:
            if members_every_s:
                self.tell_members()
            chunk = members_every_s or max_s
            try:
                self.net.run_until(pred, max_s=min(chunk, start + max_s - self.net.now))
                return self.net.now - start
            except TimeoutError:
                if self.net.now >= start + max_s - 1e-9:
                    raise TimeoutError(f"seed {self.seed}: condition not met in {max_s} virtual s") from None

    def converged(self, nodes: Iterable[NodeId]) -> bool:
        target = max(self.history.acked, default=0)
        return all(self.nodes[n].raft.status().last_applied >= target for n in nodes)
