"""Wire messages of replication (push gossip and push-pull anti-entropy) and their codec.

Kinds (append-only): repl.push, repl.ae.digest, repl.ae.buckets, repl.ae.entries,
repl.ae.records; all v1. Bytes are msgpack of the model dump; one TypeAdapter decodes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from pydantic import Field, TypeAdapter, ValidationError

from federation.replication.digest import ENTRY_BYTES, MAX_BUCKETS
from federation.replication.errors import ReplicationError
from federation.replication.record import (
    NodeIdField,
    Record,
    RecordKey,
    TableName,
)
from federation.strict import Wire

# Hard caps on what one message may carry (the configured caps are lower). 4096 records of
# up to a few KB keep one message within a few MB; 65,536 entries of ~60 B are ~4 MB.
MAX_RECORDS_PER_MSG = 4096
MAX_ENTRIES_PER_MSG = 65536
MAX_TABLES = 256
# Largest encoded message we decode at all (checked before msgpack runs).
MAX_MSG_BYTES = 16 << 20

Hash16 = Annotated[bytes, Field(min_length=ENTRY_BYTES, max_length=ENTRY_BYTES)]


class WireError(ReplicationError):
    """A replication message could not be decoded; the message names the field."""


class Push(Wire):
    """Recent deltas, pushed to a few random peers each gossip round."""

    kind: Literal["repl.push"] = "repl.push"
    v: Literal[1] = 1
    records: tuple[Record, ...] = Field(min_length=1, max_length=MAX_RECORDS_PER_MSG)


class TableSum(Wire):
    table: TableName
    count: int = Field(ge=0)
    root: Hash16


class AeDigest(Wire):
    """Anti-entropy step 1 (initiator -> peer): one summary per non-empty table."""

    kind: Literal["repl.ae.digest"] = "repl.ae.digest"
    v: Literal[1] = 1
    tables: tuple[TableSum, ...] = Field(max_length=MAX_TABLES)


class AeBuckets(Wire):
    """Step 2 (peer -> initiator): the bucket hashes of a table whose root differed."""

    kind: Literal["repl.ae.buckets"] = "repl.ae.buckets"
    v: Literal[1] = 1
    table: TableName
    hashes: tuple[Hash16, ...] = Field(min_length=1, max_length=MAX_BUCKETS)


class Entry(Wire):
    """What a node holds under one key: version, tombstone flag and the record's digest entry."""

    key: RecordKey
    hlc: int = Field(ge=0, lt=1 << 64)
    origin: NodeIdField
    tombstone: bool
    h: Hash16


class AeEntries(Wire):
    """Step 3 (initiator -> peer): every entry of the listed buckets.

    A bucket too big for one message is listed alone and covered for keys in [start, end)
    only (None = unbounded); the initiator picks one such window at random each round, so
    every window is compared in time.
    """

    kind: Literal["repl.ae.entries"] = "repl.ae.entries"
    v: Literal[1] = 1
    table: TableName
    buckets: tuple[Annotated[int, Field(ge=0, lt=MAX_BUCKETS)], ...] = Field(
        min_length=1, max_length=MAX_BUCKETS
    )
    start: RecordKey | None = None
    end: RecordKey | None = None
    entries: tuple[Entry, ...] = Field(max_length=MAX_ENTRIES_PER_MSG)


class KeyRef(Wire):
    table: TableName
    key: RecordKey


class AeRecords(Wire):
    """Step 4/5: records the other side lacks or holds older, and keys we want back."""

    kind: Literal["repl.ae.records"] = "repl.ae.records"
    v: Literal[1] = 1
    records: tuple[Record, ...] = Field(max_length=MAX_RECORDS_PER_MSG)
    want: tuple[KeyRef, ...] = Field(default=(), max_length=MAX_ENTRIES_PER_MSG)


ReplMsg = Annotated[Push | AeDigest | AeBuckets | AeEntries | AeRecords, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Push | AeDigest | AeBuckets | AeEntries | AeRecords] = TypeAdapter(ReplMsg)
ReplMessage = Push | AeDigest | AeBuckets | AeEntries | AeRecords


def encode(msg: ReplMessage) -> bytes:
    """msgpack bytes of a message."""
    out: bytes = msgpack.packb(msg.model_dump(), use_bin_type=True)
    return out


def decode(raw: bytes) -> ReplMessage:
    """Decode and validate one message.

    Raises:
        WireError: too large, not msgpack, or invalid; the text names the field path.
    """
    if len(raw) > MAX_MSG_BYTES:
        raise WireError(f"message: larger than {MAX_MSG_BYTES} bytes")
    try:
        obj: Any = msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise WireError("message: not msgpack") from None
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        raise WireError(f"{loc}: {err['msg']}") from None


__all__ = [
    "MAX_ENTRIES_PER_MSG",
    "MAX_RECORDS_PER_MSG",
    "AeBuckets",
    "AeDigest",
    "AeEntries",
    "AeRecords",
    "Entry",
    "KeyRef",
    "Push",
    "ReplMessage",
    "ReplMsg",
    "TableSum",
    "WireError",
    "decode",
    "encode",
]
