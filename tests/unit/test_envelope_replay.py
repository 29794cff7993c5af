"""The replay cache: remembers nonces within the window, is bounded, and never reopens a replay."""

from __future__ import annotations

import pytest

from federation.replay import ReplayCache


def test_second_sight_of_a_nonce_is_refused() -> None:
    c = ReplayCache(max_skew_s=30)
    assert c.check_and_add(b"n1", 100.0, 100.0)
    assert not c.check_and_add(b"n1", 100.0, 100.0)
    assert c.check_and_add(b"n2", 100.0, 100.0)


def test_entries_expire_after_the_window_and_the_floor_keeps_them_refused() -> None:
    c = ReplayCache(max_skew_s=30)
    c.check_and_add(b"n1", 100.0, 100.0)
    assert c.check_and_add(b"n2", 140.0, 140.0)  # expires n1
    assert len(c) == 1
    # even if the wall clock steps back, n1's ts is at/below the floor
    assert not c.check_and_add(b"n1", 100.0, 101.0)


def test_full_cache_evicts_oldest_ts_and_raises_the_floor() -> None:
    c = ReplayCache(max_skew_s=1000, max_entries=3)
    for i, ts in enumerate([10.0, 5.0, 20.0, 30.0]):
        assert c.check_and_add(bytes([i]), ts, 30.0)
    assert len(c) == 3 and c.floor == 5.0 and c.floor_raises == 1
    # the evicted nonce (ts 5) cannot be replayed; nor can anything at/below the floor
    assert not c.check_and_add(bytes([1]), 5.0, 30.0)
    assert not c.check_and_add(b"new", 4.0, 30.0)
    assert c.check_and_add(b"new2", 6.0, 30.0)


def test_cache_stays_bounded_under_a_flood() -> None:
    c = ReplayCache(max_skew_s=30, max_entries=100)
    for i in range(10_000):
        c.check_and_add(i.to_bytes(4, "big"), 1000.0 + i * 1e-3, 1000.0 + i * 1e-3)
    assert len(c) == 100 and len(c._seen) == 100


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ReplayCache(max_skew_s=0)
    with pytest.raises(ValueError):
        ReplayCache(max_entries=0)
