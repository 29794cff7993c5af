"""State and helpers shared by the Raft core's parts (raft.py, leader.py, follower.py).

`CoreState` only declares the node's state and the few calls one part makes into another;
`Raft` (raft.py) owns and initialises it. Not a public API.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from federation.consensus.config import RaftConfig
from federation.consensus.events import Effect, MembershipChanged, RaftStats, Role, StateMachine
from federation.consensus.log import RaftStorage
from federation.consensus.membership import ConfigLog, MemberConfig
from federation.consensus.messages import Entry
from federation.consensus.progress import Progress
from federation.sansio import NodeId

CMD: Literal["cmd"] = "cmd"  # EntryType.COMMAND on the wire
NOOP: Literal["noop"] = "noop"  # EntryType.NOOP
CONF: Literal["conf"] = "conf"  # EntryType.CONFIG


@dataclass(slots=True)
class PendingSnapshot:
    """A snapshot being received chunk by chunk (one at a time, capped by max_snapshot_bytes)."""

    index: int
    term: int
    buf: bytearray = field(default_factory=bytearray)


class CoreState:
    """The state of one Raft node; see `Raft.__init__` for what each field starts as."""

    id: NodeId
    cfg: RaftConfig
    stats: RaftStats
    _st: RaftStorage
    _sm: StateMachine
    _rng: random.Random
    _term: int
    _voted_for: NodeId | None
    _role: Role
    _leader: NodeId | None
    _out: list[Effect]
    _commit: int
    _applied: int
    _confs: ConfigLog
    _election_deadline: float
    _election_wake: float | None
    _last_leader_contact: float
    _votes: set[NodeId]
    _progress: dict[NodeId, Progress]
    _alive: frozenset[NodeId]
    _gone: frozenset[NodeId]
    _became_leader_at: float
    _pending_snap: PendingSnapshot | None

    def _config(self) -> MemberConfig:
        return self._confs.current()

    def _emit_membership(self, index: int) -> None:
        conf = self._config()
        self._out.append(MembershipChanged(conf.voters, conf.learners, index))

    def _last_term(self) -> int:
        t = self._st.term_at(self._st.last_index())
        return t if t is not None else 0

    # Implemented by Raft (raft.py); declared here so each part type-checks on its own.
    def _become_follower(self, now: float, term: int, leader: NodeId | None) -> None:
        raise NotImplementedError

    def _reset_election(self, now: float) -> None:
        raise NotImplementedError

    def _apply_committed(self, now: float) -> None:
        raise NotImplementedError


def member_config(e: Entry) -> MemberConfig:
    return MemberConfig(frozenset(map(NodeId, e.voters)), frozenset(map(NodeId, e.learners)))


__all__ = ["CMD", "CONF", "NOOP", "CoreState", "PendingSnapshot", "member_config"]
