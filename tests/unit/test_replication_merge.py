"""LWW merge: one total order, so any delivery order (and duplicates) gives the same state."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.replication.merge import order_key, supersedes, winner
from federation.replication.record import Draft, Version


def d(hlc: int, origin: str = "a", value: bytes = b"x", tomb: bool = False) -> Draft:
    return Draft("reg", "k", b"" if tomb else value, Version(hlc=hlc, origin=origin), tomb)


@pytest.mark.parametrize(
    ("new", "old", "wins"),
    [
        (d(2), None, True),
        (d(2), d(1), True),
        (d(1), d(2), False),
        (d(2), d(2), False),  # identical: idempotent
        (d(2, "b"), d(2, "a"), True),  # equal hlc: origin id breaks the tie
        (d(2, "a"), d(2, "b"), False),
        (d(2, tomb=True), d(2), True),  # same version: the tombstone wins
        (d(2), d(2, tomb=True), False),
        (d(2, value=b"z"), d(2, value=b"y"), True),  # same version, both live: larger value
        (d(3), d(2, tomb=True), True),  # a later write does revive a deleted key
    ],
)
def test_supersedes_table(new: Draft, old: Draft | None, wins: bool) -> None:
    assert supersedes(new, old) is wins


versions = st.builds(
    d,
    st.integers(0, 5),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([b"", b"x", b"y"]),
    st.booleans(),
)


@settings(deadline=None, max_examples=100)  # no wall-clock deadline: the CI box is shared
@given(st.lists(versions, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_any_delivery_order_with_duplicates_keeps_the_same_winner(
    recs: list[Draft], rnd: random.Random
) -> None:
    def replay(seq: list[Draft]) -> Draft | None:
        cur: Draft | None = None
        for r in seq:
            if supersedes(r, cur):
                cur = r
        return cur

    expected = winner(recs)
    for _ in range(5):
        seq = recs + rnd.sample(recs, k=rnd.randint(0, len(recs)))  # duplicates
        rnd.shuffle(seq)
        got = replay(seq)
        assert got is not None and order_key(got) == order_key(expected)


def test_winner_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        winner([])
