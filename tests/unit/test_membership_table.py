"""MemberTable: probe order, reaping, the cap, and the bounded list of failed members."""

from __future__ import annotations

import random

from federation.membership import MemberState, SwimConfig
from federation.membership.table import MemberTable, Row
from federation.sansio import NodeId

ALIVE, DEAD, SUSPECT = MemberState.ALIVE, MemberState.DEAD, MemberState.SUSPECT


def table(**cfg: float) -> MemberTable:
    me = Row(NodeId("me"), "addr-me", ALIVE, 0, {}, 0.0)
    return MemberTable(me, SwimConfig(**cfg), random.Random(1))  # type: ignore[arg-type]  # test kwargs


def row(name: str, state: MemberState = ALIVE, at: float = 0.0) -> Row:
    return Row(NodeId(name), f"addr-{name}", state, 0, {}, at)


def test_round_robin_skips_dead_and_self_and_covers_everyone() -> None:
    t = table()
    for name, st in (("a", ALIVE), ("b", SUSPECT), ("c", DEAD), ("d", ALIVE)):
        assert t.add(row(name, st))
    first = [t.next_target(1.0) for _ in range(3)]
    assert sorted(r.node for r in first if r) == ["a", "b", "d"]
    second = [t.next_target(2.0) for _ in range(3)]
    assert sorted(r.node for r in second if r) == ["a", "b", "d"]


def test_alone_there_is_no_target() -> None:
    assert table().next_target(0.0) is None


def test_a_new_round_reaps_long_dead_rows() -> None:
    t = table(dead_reap_s=10.0)
    t.add(row("a"))
    t.add(row("x", DEAD, at=0.0))
    t.next_target(5.0)
    t.next_target(5.0)
    assert "x" in t
    t.next_target(11.0)
    t.next_target(11.0)
    assert "x" not in t and "a" in t


def test_cap_evicts_the_oldest_gone_row_or_refuses() -> None:
    t = table(max_members=3)
    assert t.add(row("a")) and t.add(row("old", DEAD, at=1.0))
    assert t.add(row("b"))  # evicts "old"
    assert "old" not in t and len(t) == 3
    assert not t.add(row("c"))


def test_failed_members_are_bounded_fifo_and_expire() -> None:
    t = table(max_failed=2, reconnect_timeout_s=100.0)
    for i, name in enumerate(("a", "b", "c")):
        t.mark_failed(NodeId(name), f"addr-{name}", float(i))
    assert t.failed_dropped == 1
    assert t.failed_addr_to_retry(50.0) in {"addr-b", "addr-c"}
    assert t.failed_addr_to_retry(500.0) is None


def test_live_count_and_records() -> None:
    t = table()
    t.add(row("a"))
    t.add(row("b", SUSPECT))
    t.add(row("c", DEAD))
    assert t.live_count() == 3
    assert {(r.node, r.state) for r in t.records()} == {
        ("me", "alive"),
        ("a", "alive"),
        ("b", "suspect"),
        ("c", "dead"),
    }
    assert t.peers(ALIVE) == [NodeId("a")]
