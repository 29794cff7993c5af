"""Raft wire messages (pydantic, `kind` + `v`) and their msgpack codec.

One TypeAdapter over the union decodes every Raft message; anything else is a `RaftDecodeError`.
The sender's identity is not in the body: the transport's signed envelope supplies `src`.
Kinds are append-only (docs/wire catalogue): a change in meaning needs a new `v`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from federation.consensus.errors import RaftDecodeError
from federation.strict import Wire

# A message larger than this is refused before decoding: a full append batch (config
# `max_append_bytes`, 1 MiB) or snapshot chunk plus framing fits with room to spare.
MAX_MESSAGE_BYTES = 4 << 20
# Node ids are short hashes; 128 chars leaves room for a prefix without letting a peer grow maps.
_NodeIdStr = Annotated[str, Field(min_length=1, max_length=128)]
# Voter sets are at most a handful, learner sets a cluster (LAN clusters are 1-100 nodes).
MAX_CONFIG_MEMBERS = 1024


class EntryType(StrEnum):
    """What a log entry carries."""

    COMMAND = "cmd"  # an application command (opaque bytes)
    NOOP = "noop"  # appended by a new leader to commit earlier terms (Raft §8)
    CONFIG = "conf"  # the full new membership (voters + learners), effective once appended (§4.1 thesis)


class Entry(Wire):
    """One log entry; CONFIG entries carry the whole membership, not a delta."""

    index: int = Field(ge=1)
    term: int = Field(ge=0)
    type: Literal["cmd", "noop", "conf"] = "cmd"
    data: bytes = b""
    voters: tuple[_NodeIdStr, ...] = Field(default=(), max_length=MAX_CONFIG_MEMBERS)
    learners: tuple[_NodeIdStr, ...] = Field(default=(), max_length=MAX_CONFIG_MEMBERS)

    def size(self) -> int:
        """Approximate encoded size, used to cap batches."""
        return 24 + len(self.data) + 16 * (len(self.voters) + len(self.learners))


class VoteRequest(Wire):
    """RequestVote (Raft §5.2); with `pre_vote` it asks "would you vote?" without changing terms (§9.6)."""

    kind: Literal["raft.vote"] = "raft.vote"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    last_log_index: int = Field(ge=0)
    last_log_term: int = Field(ge=0)
    pre_vote: bool = False


class VoteResponse(Wire):
    kind: Literal["raft.vote_resp"] = "raft.vote_resp"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    granted: bool
    pre_vote: bool = False


class AppendEntries(Wire):
    """AppendEntries (Raft §5.3); an empty `entries` is a heartbeat."""

    kind: Literal["raft.append"] = "raft.append"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    prev_index: int = Field(ge=0)
    prev_term: int = Field(ge=0)
    entries: tuple[Entry, ...] = Field(default=(), max_length=4096)
    leader_commit: int = Field(ge=0)

    @model_validator(mode="after")
    def _contiguous(self) -> AppendEntries:
        expect = self.prev_index + 1
        last_term = self.prev_term
        for i, e in enumerate(self.entries):
            if e.index != expect:
                raise ValueError(f"entries.{i}.index: expected {expect}, got {e.index}")
            if e.term < last_term or e.term > self.term:
                raise ValueError(f"entries.{i}.term: {e.term} out of order or above message term")
            expect += 1
            last_term = e.term
        return self


class AppendResponse(Wire):
    """Answer to AppendEntries; on reject, `conflict_index`/`conflict_term` drive fast back-off."""

    kind: Literal["raft.append_resp"] = "raft.append_resp"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    success: bool
    prev_index: int = Field(ge=0)  # echoed, so the leader can ignore stale rejections
    match_index: int = Field(ge=0)  # on success: the leader's log matches ours up to here
    conflict_index: int = Field(default=0, ge=0)
    conflict_term: int = Field(default=0, ge=0)


class InstallSnapshot(Wire):
    """One chunk of the leader's snapshot (Raft §7); chunks go in order, one in flight per peer."""

    kind: Literal["raft.snapshot"] = "raft.snapshot"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    last_index: int = Field(ge=0)
    last_term: int = Field(ge=0)
    voters: tuple[_NodeIdStr, ...] = Field(default=(), max_length=MAX_CONFIG_MEMBERS)
    learners: tuple[_NodeIdStr, ...] = Field(default=(), max_length=MAX_CONFIG_MEMBERS)
    offset: int = Field(ge=0)
    data: bytes
    done: bool


class SnapshotResponse(Wire):
    kind: Literal["raft.snapshot_resp"] = "raft.snapshot_resp"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    last_index: int = Field(ge=0)
    next_offset: int = Field(ge=0)  # bytes received so far (the next chunk to send)
    done: bool  # the snapshot is installed (or was already covered by our log)


RaftMessage = Annotated[
    VoteRequest | VoteResponse | AppendEntries | AppendResponse | InstallSnapshot | SnapshotResponse,
    Field(discriminator="kind"),
]
RAFT_MESSAGE_TYPES = (
    VoteRequest,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    SnapshotResponse,
)
_ADAPTER: TypeAdapter[Any] = TypeAdapter(RaftMessage)
AnyRaftMessage = (
    VoteRequest | VoteResponse | AppendEntries | AppendResponse | InstallSnapshot | SnapshotResponse
)


def encode(msg: AnyRaftMessage) -> bytes:
    """Encode a Raft message as msgpack (bytes stay raw bytes)."""
    packed: bytes = msgpack.packb(msg.model_dump(mode="python"), use_bin_type=True)
    return packed


def decode(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> AnyRaftMessage:
    """Decode and validate one Raft message.

    Raises:
        RaftDecodeError: too large, not msgpack, unknown kind or a field fails validation
            (the message names the field path).
    """
    if len(raw) > max_bytes:
        raise RaftDecodeError(f"message is {len(raw)} bytes, limit {max_bytes}")
    try:
        obj = msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:
        raise RaftDecodeError(f"not msgpack: {e}") from None
    try:
        msg: AnyRaftMessage = _ADAPTER.validate_python(obj)
    except ValidationError as e:
        first = e.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise RaftDecodeError(f"{path}: {first['msg']}") from None
    return msg


__all__ = [
    "MAX_MESSAGE_BYTES",
    "RAFT_MESSAGE_TYPES",
    "AnyRaftMessage",
    "AppendEntries",
    "AppendResponse",
    "Entry",
    "EntryType",
    "InstallSnapshot",
    "RaftMessage",
    "SnapshotResponse",
    "VoteRequest",
    "VoteResponse",
    "decode",
    "encode",
]
