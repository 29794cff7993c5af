"""Wire codec: every kind round-trips; bad input is refused naming the field."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pytest

from federation.replication.record import Draft, Version, sign_batch
from federation.replication.wire import (
    AeBuckets,
    AeDigest,
    AeEntries,
    AeRecords,
    Entry,
    KeyRef,
    Push,
    ReplMessage,
    TableSum,
    WireError,
    decode,
    encode,
)

REC = sign_batch([Draft("reg", "k", b"v", Version(hlc=7, origin="n1"), False)] * 3, lambda m: b"s" * 64)[1]
H16 = b"h" * 16

MESSAGES: list[ReplMessage] = [
    Push(records=(REC,)),
    AeDigest(tables=(TableSum(table="reg", count=3, root=H16),)),
    AeBuckets(table="reg", hashes=(H16,) * 64),
    AeEntries(
        table="reg",
        buckets=(1, 5),
        start="a",
        end="z",
        entries=(Entry(key="k", hlc=7, origin="n1", tombstone=False, h=H16),),
    ),
    AeRecords(records=(REC,), want=(KeyRef(table="reg", key="k"),)),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.kind)
def test_round_trip(msg: ReplMessage) -> None:
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(kind="repl.nope"), "kind"),
        (lambda d: d.update(v=2), "v"),
        (lambda d: d["records"][0].update(table="NO"), "records.0.table"),
        (lambda d: d["records"][0]["version"].update(hlc=-1), "records.0.version.hlc"),
        (lambda d: d["records"][0]["proof"].update(path=(b"x",)), "records.0.proof.path.0"),
        (lambda d: d.update(records=()), "records"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_bad_push_names_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    d = Push(records=(REC,)).model_dump()
    d["records"] = [dict(r) for r in d["records"]]
    mutate(d)
    with pytest.raises(WireError, match=field.replace(".", r"\.")):
        decode(msgpack.packb(d, use_bin_type=True))


def test_not_msgpack_and_oversize_are_refused() -> None:
    with pytest.raises(WireError, match="not msgpack"):
        decode(b"\xc1")
    with pytest.raises(WireError, match="larger than"):
        decode(b"\0" * ((16 << 20) + 1))


def test_entries_bucket_index_is_bounded() -> None:
    d = MESSAGES[3].model_dump()
    d["buckets"] = (99999,)
    with pytest.raises(WireError, match="buckets.0"):
        decode(msgpack.packb(d, use_bin_type=True))
