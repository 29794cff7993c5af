"""SWIM wire messages (pydantic, one TypeAdapter over the union) and their msgpack codec.

Kinds and fields are append-only; a change of meaning needs a new `v`. Decoding checks shape and
bounds only; protocol meaning (is this ack expected, is this incarnation stale) is swim.py's job.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pydantic
from pydantic import Field, StringConstraints, TypeAdapter

from federation.errors import AuthError, AuthReason
from federation.membership.config import MAX_PIGGYBACK_WIRE
from federation.sansio import NodeId
from federation.strict import Wire

PROTOCOL_VERSION: Final = 1
# Limits of what a peer may send. Each is far above normal use and small enough to bound memory.
MAX_NODE_ID_CHARS: Final = 128  # ids are 16-char key hashes; room for readable test names
MAX_ADDR_CHARS: Final = 256  # host:port or a URL
MAX_META_ENTRIES: Final = 32  # roles, cluster, ports: a handful in practice
MAX_META_KEY_CHARS: Final = 64
MAX_META_VALUE_CHARS: Final = 512
MAX_SYNC_RECORDS: Final = 10_000  # = the default member cap
MAX_INT: Final = 2**63 - 1  # msgpack int64
# A full push-pull of 10,000 members with maximal meta is large; reject anything bigger unread.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class MemberState(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


WireNodeId = Annotated[NodeId, Field(min_length=1, max_length=MAX_NODE_ID_CHARS)]
Addr = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ADDR_CHARS)]
Inc = Annotated[int, Field(ge=0, le=MAX_INT)]
Seq = Annotated[int, Field(ge=0, le=MAX_INT)]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_META_KEY_CHARS)]
MetaValue = Annotated[str, StringConstraints(max_length=MAX_META_VALUE_CHARS)]
Meta = Annotated[dict[MetaKey, MetaValue], Field(max_length=MAX_META_ENTRIES)]
StateName = Literal["alive", "suspect", "dead", "left"]


# ----- gossip updates (piggybacked) ------------------------------------------------------------
class Alive(Wire):
    """`node` is alive at incarnation `inc`, reachable at `addr`."""

    kind: Literal["swim.alive"] = "swim.alive"
    v: Literal[1] = 1
    node: WireNodeId
    inc: Inc
    addr: Addr
    meta: Meta = Field(default_factory=dict)


class Suspect(Wire):
    """`src` suspects `node` at incarnation `inc` (SWIM §4.2)."""

    kind: Literal["swim.suspect"] = "swim.suspect"
    v: Literal[1] = 1
    node: WireNodeId
    inc: Inc
    src: WireNodeId


class Dead(Wire):
    """`src` declares `node` dead at `inc`; src == node means the node left gracefully."""

    kind: Literal["swim.dead"] = "swim.dead"
    v: Literal[1] = 1
    node: WireNodeId
    inc: Inc
    src: WireNodeId


Update = Annotated[Alive | Suspect | Dead, Field(discriminator="kind")]
Updates = Annotated[tuple[Update, ...], Field(max_length=MAX_PIGGYBACK_WIRE)]


# ----- top-level messages ----------------------------------------------------------------------
class Ping(Wire):
    kind: Literal["swim.ping"] = "swim.ping"
    v: Literal[1] = 1
    seq: Seq
    target: WireNodeId  # a ping for another id (address reused after a restart) is ignored
    gossip: Updates = ()


class Ack(Wire):
    kind: Literal["swim.ack"] = "swim.ack"
    v: Literal[1] = 1
    seq: Seq
    gossip: Updates = ()


class Nack(Wire):
    """Lifeguard: a relay could not reach the target, so the prober's own link is fine."""

    kind: Literal["swim.nack"] = "swim.nack"
    v: Literal[1] = 1
    seq: Seq


class PingReq(Wire):
    """Ask the receiver to ping `target` for us and forward its ack (or a nack) under `seq`."""

    kind: Literal["swim.ping_req"] = "swim.ping_req"
    v: Literal[1] = 1
    seq: Seq
    target: WireNodeId
    target_addr: Addr
    gossip: Updates = ()


class Gossip(Wire):
    kind: Literal["swim.gossip"] = "swim.gossip"
    v: Literal[1] = 1
    updates: Updates


class MemberRecord(Wire):
    """One row of a push-pull state exchange."""

    node: WireNodeId
    addr: Addr
    state: StateName
    inc: Inc
    meta: Meta = Field(default_factory=dict)


Records = Annotated[tuple[MemberRecord, ...], Field(max_length=MAX_SYNC_RECORDS)]


class Sync(Wire):
    """Push-pull: our full state; the receiver merges it and answers with a SyncReply."""

    kind: Literal["swim.sync"] = "swim.sync"
    v: Literal[1] = 1
    join: bool = False
    states: Records


class SyncReply(Wire):
    kind: Literal["swim.sync_reply"] = "swim.sync_reply"
    v: Literal[1] = 1
    states: Records


SwimMsg = Ping | Ack | Nack | PingReq | Gossip | Sync | SyncReply
SWIM_TYPES: Final = (Ping, Ack, Nack, PingReq, Gossip, Sync, SyncReply)
SWIM_KINDS: Final = frozenset(t.model_fields["kind"].default for t in SWIM_TYPES)
SWIM_ADAPTER: Final[TypeAdapter[SwimMsg]] = TypeAdapter(Annotated[SwimMsg, Field(discriminator="kind")])


def encode(msg: SwimMsg) -> bytes:
    """msgpack bytes of a SWIM message."""
    data: bytes = msgpack.packb(msg.model_dump(mode="python"), use_bin_type=True)
    return data


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> SwimMsg:
    """Parse and validate one SWIM message.

    Raises:
        AuthError: TOO_LARGE, MALFORMED (not msgpack / not a map), UNKNOWN_KIND,
            UNSUPPORTED_VERSION or BAD_BODY (detail names the field path).
    """
    if len(data) > max_bytes:
        raise AuthError(AuthReason.TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    try:
        raw: Any = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as e:
        raise AuthError(AuthReason.MALFORMED, f"not msgpack: {type(e).__name__}") from None
    return validate(raw)


def validate(raw: Any) -> SwimMsg:
    """Validate an already-unpacked message (e.g. the body of a verified envelope).

    Raises:
        AuthError: as `decode`, minus TOO_LARGE.
    """
    if not isinstance(raw, dict):
        raise AuthError(AuthReason.MALFORMED, "message is not a map")
    kind = raw.get("kind")
    if kind not in SWIM_KINDS:
        raise AuthError(AuthReason.UNKNOWN_KIND, f"kind: {str(kind)[:40]!r}")
    if raw.get("v") != PROTOCOL_VERSION:
        raise AuthError(AuthReason.UNSUPPORTED_VERSION, f"v: {str(raw.get('v'))[:20]!r} for {kind}")
    try:
        return SWIM_ADAPTER.validate_python(raw)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        path = ".".join(str(p) for p in err["loc"][1:])  # drop the union tag
        raise AuthError(AuthReason.BAD_BODY, f"{path or kind}: {err['msg']}") from None


def check_identity(node: str, addr: str, incarnation: int, meta: dict[str, str] | None) -> dict[str, str]:
    """Check our own id, address, incarnation and meta against the wire limits; return a meta copy.

    Raises:
        ValueError: naming the field that is out of bounds.
    """
    if not isinstance(node, str) or not 1 <= len(node) <= MAX_NODE_ID_CHARS:
        raise ValueError(f"self_id: must be a str of 1..{MAX_NODE_ID_CHARS} chars")
    if not isinstance(addr, str) or not 1 <= len(addr) <= MAX_ADDR_CHARS:
        raise ValueError(f"addr: must be a str of 1..{MAX_ADDR_CHARS} chars")
    if isinstance(incarnation, bool) or not isinstance(incarnation, int) or not 0 <= incarnation < MAX_INT:
        raise ValueError(f"incarnation: must be an int in 0..{MAX_INT - 1}, got {incarnation!r}")
    meta = dict(meta or {})
    if len(meta) > MAX_META_ENTRIES:
        raise ValueError(f"meta: at most {MAX_META_ENTRIES} entries, got {len(meta)}")
    for k, v in meta.items():
        if not isinstance(k, str) or not 1 <= len(k) <= MAX_META_KEY_CHARS:
            raise ValueError(f"meta: key {k!r} must be a str of 1..{MAX_META_KEY_CHARS} chars")
        if not isinstance(v, str) or len(v) > MAX_META_VALUE_CHARS:
            raise ValueError(f"meta.{k}: must be a str of at most {MAX_META_VALUE_CHARS} chars")
    return meta


__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "SWIM_ADAPTER",
    "SWIM_KINDS",
    "SWIM_TYPES",
    "Ack",
    "Alive",
    "Dead",
    "Gossip",
    "MemberRecord",
    "MemberState",
    "Nack",
    "Ping",
    "PingReq",
    "Suspect",
    "SwimMsg",
    "Sync",
    "SyncReply",
    "Update",
    "check_identity",
    "decode",
    "encode",
    "validate",
]
