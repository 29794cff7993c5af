"""What the SWIM core hands out besides `Send`/`Wake`: effects, timer keys, snapshots, counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from federation.membership.messages import MemberState, SwimMsg
from federation.sansio import NodeId, Send, Wake


@dataclass(frozen=True, slots=True)
class SendAddr:
    """Deliver `msg` to a transport address whose node id we do not know (a seed, a reaped member)."""

    addr: str
    msg: SwimMsg


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """Notification: our view of `node` changed (new member, state, incarnation or address)."""

    node: NodeId
    state: MemberState
    incarnation: int
    addr: str


@dataclass(frozen=True, slots=True)
class Member:
    """One row of `Swim.members()`."""

    node: NodeId
    addr: str
    state: MemberState
    incarnation: int
    meta: Mapping[str, str] = field(default_factory=dict)


# ----- timer keys (one pending timer per key; see federation.sansio.Wake) ----------------------
@dataclass(frozen=True, slots=True)
class ProbeTick:
    """End of the current probe (suspect on failure) and start of the next one."""


@dataclass(frozen=True, slots=True)
class ProbeTimeout:
    """No direct ack yet: ask k members to probe indirectly."""

    seq: int


@dataclass(frozen=True, slots=True)
class GossipTick:
    pass


@dataclass(frozen=True, slots=True)
class SyncTick:
    """Periodic push-pull with one random member."""


@dataclass(frozen=True, slots=True)
class ReconnectTick:
    """Periodic push-pull with one failed member, so healed partitions merge."""


@dataclass(frozen=True, slots=True)
class JoinTick:
    """Retry the seeds while we know no live member."""


@dataclass(frozen=True, slots=True)
class SuspicionTimeout:
    node: NodeId


@dataclass(frozen=True, slots=True)
class RelayTimeout:
    """A ping we relay for someone else went unanswered: send them a nack."""

    seq: int


TimerKey = (
    ProbeTick
    | ProbeTimeout
    | GossipTick
    | SyncTick
    | ReconnectTick
    | JoinTick
    | SuspicionTimeout
    | RelayTimeout
)
Effect = Send[SwimMsg] | SendAddr | Wake | MemberChanged


@dataclass(slots=True)
class SwimCounters:
    """Monotonic counters (metrics). Peer-caused drops are here, never exceptions."""

    messages_in: int = 0
    ignored_unknown_type: int = 0
    ignored_bad_version: int = 0
    ignored_from_self: int = 0
    ignored_wrong_target: int = 0
    ignored_unexpected_ack: int = 0
    ignored_unknown_timer: int = 0
    relays_dropped: int = 0
    members_dropped: int = 0
    failed_dropped: int = 0
    refutations: int = 0
    probes: int = 0
    probes_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


__all__ = [
    "Effect",
    "GossipTick",
    "JoinTick",
    "Member",
    "MemberChanged",
    "ProbeTick",
    "ProbeTimeout",
    "ReconnectTick",
    "RelayTimeout",
    "SendAddr",
    "SuspicionTimeout",
    "SwimCounters",
    "SyncTick",
    "TimerKey",
]
