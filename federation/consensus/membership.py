"""Automatic voter management: the leader's choice of the next single membership change.

A pure function of the current config and what membership (SWIM) says is alive; the core
proposes at most one change at a time and only once the previous one committed (thesis §4.1).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from federation.sansio import NodeId


@dataclass(frozen=True, slots=True)
class MemberConfig:
    voters: frozenset[NodeId]
    learners: frozenset[NodeId]


class ConfigLog:
    """The configs in the log after the snapshot's, so the core can find the one in force.

    A config takes effect when appended (thesis §4.1), so truncating the log can revert it.
    """

    def __init__(self, base_index: int, base: MemberConfig) -> None:
        self._base = (base_index, base)
        self._log: list[tuple[int, MemberConfig]] = []

    def current(self) -> MemberConfig:
        return self._log[-1][1] if self._log else self._base[1]

    def last_index(self) -> int:
        """Index of the newest config entry in the log (the snapshot's index if none)."""
        return self._log[-1][0] if self._log else self._base[0]

    def at(self, index: int) -> MemberConfig:
        conf = self._base[1]
        for i, c in self._log:
            if i > index:
                break
            conf = c
        return conf

    def add(self, index: int, conf: MemberConfig) -> None:
        self._log.append((index, conf))

    def truncate_from(self, index: int) -> bool:
        """Forget configs at `index` and later; True if any was forgotten."""
        before = len(self._log)
        self._log = [c for c in self._log if c[0] < index]
        return len(self._log) != before

    def compact(self, index: int, conf: MemberConfig, *, keep_suffix: bool = True) -> None:
        """A snapshot at `index` now holds `conf`; keep later configs only if the log suffix stays."""
        self._base = (index, conf)
        self._log = [c for c in self._log if c[0] > index] if keep_suffix else []


def plan_change(
    self_id: NodeId,
    current: MemberConfig,
    alive: AbstractSet[NodeId],
    caught_up: AbstractSet[NodeId],
    *,
    max_voters: int,
    max_members: int,
    gone: AbstractSet[NodeId] = frozenset(),
) -> MemberConfig | None:
    """The next config to propose, or None when the current one is what we want.

    In order: (1) remove a dead voter when a live, caught-up learner can replace it, or when
    there are more voters than `max_voters`; (2) promote a caught-up learner while there are
    fewer than min(max_voters, live members) voters; (3) add a live non-member as learner;
    (4) drop dead learners. A dead voter with no replacement stays: removing it would not
    improve fault tolerance, and it may only be partitioned away. First of all, (0) a voter in
    `gone` (it left the cluster for good, or was removed; `self_id` included, when the leader
    itself leaves) is removed even with no replacement, while another voter remains: the rest
    must keep a quorum of their own (two nodes, one leaves: the other is a quorum alone).
    """
    alive_all = (set(alive) | {self_id}) - set(gone)
    voters, learners = current.voters, current.learners
    leaving = sorted(n for n in voters if n in gone)
    if leaving and len(voters) > 1:
        return MemberConfig(voters - {leaving[0]}, learners)
    members = voters | learners
    promotable = sorted(n for n in learners if n in alive_all and n in caught_up)
    dead_voters = sorted(n for n in voters if n not in alive_all and n != self_id)
    live_members = len([n for n in members if n in alive_all])
    desired = min(max_voters, live_members)
    if dead_voters and (promotable or len(voters) > max_voters):
        return MemberConfig(voters - {dead_voters[0]}, learners)
    if len(voters) < desired and promotable:
        p = NodeId(promotable[0])
        return MemberConfig(voters | {p}, learners - {p})
    joiners = sorted(n for n in alive_all if n not in members)
    if joiners and len(members) < max_members:
        return MemberConfig(voters, learners | {NodeId(joiners[0])})
    dead_learners = sorted(n for n in learners if n not in alive_all)
    if dead_learners:
        return MemberConfig(voters, learners - {dead_learners[0]})
    return None


__all__ = ["ConfigLog", "MemberConfig", "plan_change"]
