"""Raft wire messages: msgpack round trips, and bad bytes refused with the field named."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pytest

from federation.consensus import (
    AppendEntries,
    AppendResponse,
    Entry,
    InstallSnapshot,
    RaftDecodeError,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)
from federation.consensus.messages import AnyRaftMessage

SAMPLES: list[AnyRaftMessage] = [
    VoteRequest(term=3, last_log_index=10, last_log_term=2, pre_vote=True),
    VoteResponse(term=3, granted=True, pre_vote=True),
    AppendEntries(
        term=4,
        prev_index=9,
        prev_term=3,
        entries=(
            Entry(index=10, term=3, data=b"\x00\xff"),
            Entry(index=11, term=4, type="conf", voters=("a", "b"), learners=("c",)),
        ),
        leader_commit=9,
    ),
    AppendResponse(term=4, success=False, prev_index=9, match_index=0, conflict_index=7, conflict_term=2),
    InstallSnapshot(term=4, last_index=20, last_term=3, voters=("a",), offset=0, data=b"xyz", done=True),
    SnapshotResponse(term=4, last_index=20, next_offset=3, done=False),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_every_kind_round_trips_through_msgpack(msg: AnyRaftMessage) -> None:
    assert decode(encode(msg)) == msg


def test_kinds_are_unique_and_versioned() -> None:
    assert len({m.kind for m in SAMPLES}) == len(SAMPLES)
    assert all(m.kind.startswith("raft.") and m.v == 1 for m in SAMPLES)


def test_oversized_message_is_refused_before_decoding() -> None:
    with pytest.raises(RaftDecodeError, match="limit 10"):
        decode(b"x" * 11, max_bytes=10)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"kind": "raft.nope", "v": 1}, "kind"),
        ({"kind": "raft.vote", "v": 2, "term": 1, "last_log_index": 0, "last_log_term": 0}, "v"),
        (
            {"kind": "raft.vote", "v": 1, "term": -1, "last_log_index": 0, "last_log_term": 0},
            "raft.vote.term",
        ),
        ({"kind": "raft.vote_resp", "v": 1, "term": 1, "granted": True, "extra": 1}, "extra"),
        ({"kind": "raft.vote_resp", "v": 1, "term": "1", "granted": True}, "term"),
    ],
)
def test_bad_fields_are_refused_with_their_path(obj: dict[str, object], field: str) -> None:
    with pytest.raises(RaftDecodeError, match=field):
        decode(msgpack.packb(obj, use_bin_type=True))


def test_non_contiguous_entries_are_refused() -> None:
    bad = {
        "kind": "raft.append",
        "v": 1,
        "term": 2,
        "prev_index": 1,
        "prev_term": 1,
        "leader_commit": 0,
        "entries": ({"index": 3, "term": 1},),
    }
    with pytest.raises(RaftDecodeError, match=r"entries\.0\.index: expected 2"):
        decode(msgpack.packb(bad, use_bin_type=True))


def test_entries_above_the_message_term_are_refused() -> None:
    with pytest.raises(ValueError, match="above message term"):
        AppendEntries(term=1, prev_index=0, prev_term=0, entries=(Entry(index=1, term=2),), leader_commit=0)


def test_garbage_is_not_msgpack() -> None:
    with pytest.raises(RaftDecodeError):
        decode(b"\xc1\xc1\xc1")
    with pytest.raises(RaftDecodeError):
        decode(msgpack.packb([1, 2, 3]))
