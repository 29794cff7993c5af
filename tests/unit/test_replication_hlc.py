"""Hybrid logical clock: monotonic, follows wall time, refuses runaway remote clocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.replication import hlc
from federation.replication.errors import ClockDriftError


def test_tick_follows_wall_clock_and_is_strictly_increasing() -> None:
    a = hlc.tick(0, 100.0)
    assert hlc.wall_s(a) == 100.0 and hlc.logical(a) == 0
    b = hlc.tick(a, 100.0)  # same millisecond: logical counter
    assert b == a + 1 and hlc.logical(b) == 1
    c = hlc.tick(b, 99.0)  # wall clock went backwards: still increasing
    assert c > b
    d = hlc.tick(c, 101.0)
    assert hlc.wall_s(d) == 101.0 and hlc.logical(d) == 0


def test_logical_overflow_carries_into_milliseconds() -> None:
    h = hlc.from_wall(5.0) | 0xFFFF
    nxt = hlc.tick(h, 5.0)
    assert nxt > h and hlc.wall_s(nxt) == pytest.approx(5.001)


@settings(deadline=None, max_examples=100)  # no wall-clock deadline: the CI box is shared
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1e6), st.integers(0, 1 << 50)), max_size=50))
def test_clock_never_goes_back(events: list[tuple[bool, float, int]]) -> None:
    last = 0
    for local, wall, remote in events:
        if local:
            nxt = hlc.tick(last, wall)
            assert nxt > last
        else:
            try:
                nxt = hlc.observe(last, remote, wall, max_drift_s=1e9)
            except ClockDriftError:
                continue
            assert nxt >= last and nxt >= remote
        last = nxt


def test_observe_rejects_remote_too_far_ahead_and_keeps_clock() -> None:
    now = 1000.0
    ok = hlc.from_wall(now + 4.9)
    assert hlc.observe(0, ok, now, max_drift_s=5.0) == ok
    with pytest.raises(ClockDriftError, match="ahead of the local clock"):
        hlc.observe(7, hlc.from_wall(now + 6.0), now, max_drift_s=5.0)
    with pytest.raises(ClockDriftError, match="out of range"):
        hlc.check_drift(-1, now, 5.0)


def test_from_wall_rejects_negative_time() -> None:
    with pytest.raises(ValueError, match="wall_s"):
        hlc.from_wall(-1.0)
