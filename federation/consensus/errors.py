"""Errors of the consensus package.

    FederationError (federation/errors.py)
    └── ConsensusError                 base of everything raised or returned by consensus/
        ├── RaftDecodeError            a peer's bytes are not a valid Raft message (peer did wrong: drop, count)
        ├── ProposeError               a proposal or membership change was refused; nothing was appended
        │   ├── NotLeader(leader_hint) this node does not lead; retry at `leader_hint` (None = unknown)
        │   ├── NoQuorum               no leader reachable, or the leader lost contact with a majority
        │   ├── ChangeInProgress       another voter change is not yet committed (one at a time)
        │   ├── Busy                   too many uncommitted entries; retry later
        │   └── TooLarge               the command exceeds `max_command_bytes`
        └── StorageCorrupt             the durable Raft state contradicts itself (we did wrong: raise)

`propose()` returns a ProposeError instead of raising it, so the driver decides whether to
raise it to its caller; `str()` is one sentence for the user.
"""

from __future__ import annotations

from federation.errors import FederationError


class ConsensusError(FederationError):
    """Base of consensus errors."""


class RaftDecodeError(ConsensusError):
    """Bytes from a peer are not a valid Raft message; `str()` names the field."""


class ProposeError(ConsensusError):
    """A write was refused before anything was appended."""


class NotLeader(ProposeError):
    """This node is not the leader; `leader_hint` is the leader it last heard from, if any."""

    def __init__(self, leader_hint: str | None) -> None:
        self.leader_hint = leader_hint
        super().__init__(f"not the leader; the leader is {leader_hint}" if leader_hint else "not the leader")


class NoQuorum(ProposeError):
    """No majority of voters is reachable, so nothing can commit here."""

    def __init__(self, detail: str = "no majority of voters reachable") -> None:
        super().__init__(f"no quorum: {detail}")


class ChangeInProgress(ProposeError):
    """A voter change is still uncommitted; changes go one at a time (Raft thesis §4.1)."""

    def __init__(self, pending_index: int) -> None:
        self.pending_index = pending_index
        super().__init__(f"a membership change at index {pending_index} is not committed yet")


class Busy(ProposeError):
    """Too many uncommitted entries in the leader's log."""

    def __init__(self, uncommitted: int, limit: int) -> None:
        super().__init__(f"busy: {uncommitted} uncommitted entries (limit {limit})")


class TooLarge(ProposeError):
    """The command is larger than one log entry may be."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"command: {size} bytes exceeds max_command_bytes={limit}")


class StorageCorrupt(ConsensusError):
    """Durable Raft state is inconsistent (e.g. a gap in the log)."""


__all__ = [
    "Busy",
    "ChangeInProgress",
    "ConsensusError",
    "NoQuorum",
    "NotLeader",
    "ProposeError",
    "RaftDecodeError",
    "StorageCorrupt",
    "TooLarge",
]
