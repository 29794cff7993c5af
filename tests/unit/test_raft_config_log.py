"""RaftConfig validation, the in-memory RaftStorage, and the voter-management plan."""

from __future__ import annotations

import dataclasses

import pytest

from federation.consensus import (
    Entry,
    HardState,
    InMemoryRaftStorage,
    MemberConfig,
    RaftConfig,
    Snapshot,
    StorageCorrupt,
    bootstrap,
    plan_change,
)
from federation.sansio import NodeId


def test_profiles_are_valid_and_lan_fails_over_in_about_a_second() -> None:
    lan, test = RaftConfig.lan(), RaftConfig.test()
    assert lan.election_timeout_max_s <= 1.0 and lan.max_voters == 5
    assert test.snapshot_threshold < lan.snapshot_threshold


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"heartbeat_interval_s": 0.0}, "raft.heartbeat_interval_s"),
        ({"election_timeout_max_s": 0.4}, "raft.election_timeout_max_s"),
        ({"heartbeat_interval_s": 0.3}, "raft.heartbeat_interval_s"),
        ({"max_voters": 300}, "raft.max_voters"),
        ({"max_command_bytes": 2 << 20}, "raft.max_command_bytes"),
        ({"max_inflight": -1}, "raft.max_inflight"),
    ],
)
def test_bad_config_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(RaftConfig.lan(), **changes)  # type: ignore[arg-type]  # table of bad values


def _entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(index=i, term=term, data=bytes([i % 256])) for i in range(lo, hi)]


def test_storage_append_truncate_and_slices() -> None:
    st = InMemoryRaftStorage()
    st.append(_entries(1, 11))
    assert (st.first_index(), st.last_index(), st.term_at(0), st.term_at(5), st.term_at(11)) == (
        1,
        10,
        0,
        1,
        None,
    )
    assert [e.index for e in st.entries(3, 6, 1 << 20)] == [3, 4, 5]
    assert len(st.entries(1, 11, 1)) == 1  # at least one entry even past the byte cap
    st.truncate_from(8)
    assert st.last_index() == 7
    with pytest.raises(StorageCorrupt, match="gap"):
        st.append(_entries(9, 10))
    assert st.unflushed > 0
    st.flush()
    assert st.unflushed == 0 and st.flushes == 1


def test_snapshot_keeps_a_matching_suffix_and_drops_a_conflicting_log() -> None:
    st = InMemoryRaftStorage()
    st.append(_entries(1, 11))
    st.save_snapshot(Snapshot(5, 1, (NodeId("a"),), (), b"s"))
    assert (st.first_index(), st.last_index(), st.term_at(5), st.term_at(4)) == (6, 10, 1, None)
    st.save_snapshot(Snapshot(8, 7, (NodeId("a"),), (), b"t"))  # term disagrees: whole log goes
    assert (st.first_index(), st.last_index(), st.term_at(8)) == (9, 8, 7)
    with pytest.raises(StorageCorrupt, match="older"):
        st.save_snapshot(Snapshot(3, 1, (), (), b""))
    with pytest.raises(StorageCorrupt, match="snapshot"):
        st.truncate_from(8)


def test_hard_state_term_never_goes_back() -> None:
    st = InMemoryRaftStorage()
    st.set_hard_state(HardState(3, NodeId("a")))
    with pytest.raises(StorageCorrupt):
        st.set_hard_state(HardState(2, None))
    assert st.hard_state() == HardState(3, NodeId("a"))


def test_bootstrap_only_seeds_an_empty_storage() -> None:
    st = InMemoryRaftStorage()
    assert bootstrap(st, [NodeId("b"), NodeId("a")])
    assert st.entries(1, 2, 1 << 20)[0].voters == ("a", "b")
    assert not bootstrap(st, [NodeId("c")])
    with pytest.raises(ValueError, match="voters"):
        bootstrap(InMemoryRaftStorage(), [])


def _c(voters: str, learners: str = "") -> MemberConfig:
    return MemberConfig(frozenset(map(NodeId, voters)), frozenset(map(NodeId, learners)))


@pytest.mark.parametrize(
    ("current", "alive", "caught_up", "expected"),
    [
        (_c("a"), "ab", "", _c("a", "b")),  # joiner becomes a learner
        (_c("a", "b"), "ab", "", None),  # learner not caught up yet: wait
        (_c("a", "b"), "ab", "b", _c("ab")),  # caught up: promote
        (_c("abcde", "f"), "abcdef", "f", None),  # already 5 voters
        (_c("abcde", "f"), "abcdf", "f", _c("abcd", "f")),  # dead voter e, f can replace it: remove e first
        (_c("abcd", "f"), "abcdf", "f", _c("abcdf")),  # then promote f
        (_c("abc"), "ab", "", None),  # dead voter, no replacement: keep it
        (_c("ab", "cd"), "abc", "", _c("ab", "c")),  # dead learner dropped
    ],
)
def test_plan_change(
    current: MemberConfig, alive: str, caught_up: str, expected: MemberConfig | None
) -> None:
    got = plan_change(
        NodeId("a"),
        current,
        set(map(NodeId, alive)),
        set(map(NodeId, caught_up)),
        max_voters=5,
        max_members=10,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("current", "alive", "gone", "expected"),
    [
        (_c("ab"), "a", "b", _c("a")),  # two nodes, b left: a alone is the quorum
        (_c("ab"), "ab", "a", _c("b")),  # the leader a itself leaves: it removes itself first
        (_c("abc"), "ab", "c", _c("ab")),  # no replacement needed for a node that left
        (_c("a"), "", "a", None),  # the last voter stays
        (_c("ab", "c"), "ac", "b", _c("a", "c")),  # removed before a learner is promoted
        (_c("a", "b"), "ab", "b", _c("a")),  # a gone learner is not promoted: it is dropped
    ],
)
def test_plan_change_removes_voters_that_left(
    current: MemberConfig, alive: str, gone: str, expected: MemberConfig | None
) -> None:
    got = plan_change(NodeId("a"), current, set(map(NodeId, alive)), set(map(NodeId, alive)), max_voters=5,
                      max_members=10, gone=set(map(NodeId, gone)))
    assert got == expected
