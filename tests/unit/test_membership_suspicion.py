"""SWIM/Lifeguard formulas, the decaying suspicion timer, and the local health score."""

from __future__ import annotations

import itertools

import pytest

from federation.membership import (
    Awareness,
    Suspicion,
    SwimConfig,
    push_pull_interval_s,
    remaining_suspicion_s,
    retransmit_limit,
    suspicion_max_timeout_s,
    suspicion_timeout_s,
)
from federation.membership.suspicion import expected_confirmations
from federation.sansio import NodeId

LAN = SwimConfig.lan()
A, B, C, D = NodeId("a"), NodeId("b"), NodeId("c"), NodeId("d")


@pytest.mark.parametrize(
    ("n", "seconds"), [(0, 4.0), (1, 4.0), (5, 4.0), (10, 4.0), (100, 8.0), (1000, 12.0)]
)
def test_suspicion_timeout_is_mult_log10_n_probe_intervals(n: int, seconds: float) -> None:
    assert suspicion_timeout_s(n, LAN) == pytest.approx(seconds)
    assert suspicion_max_timeout_s(n, LAN) == pytest.approx(6 * seconds)


@pytest.mark.parametrize(("n", "limit"), [(0, 0), (1, 4), (9, 4), (10, 8), (99, 8), (100, 12)])
def test_retransmit_limit_is_mult_ceil_log10_n_plus_1(n: int, limit: int) -> None:
    assert retransmit_limit(n, 4) == limit


@pytest.mark.parametrize(("n", "seconds"), [(1, 30.0), (32, 30.0), (33, 60.0), (64, 60.0), (65, 90.0)])
def test_push_pull_interval_stretches_above_32_nodes(n: int, seconds: float) -> None:
    assert push_pull_interval_s(n, LAN) == seconds


@pytest.mark.parametrize(("n", "k"), [(2, 0), (3, 0), (4, 2), (100, 2)])
def test_expected_confirmations_need_enough_other_members(n: int, k: int) -> None:
    assert expected_confirmations(n, LAN) == k


def test_remaining_time_decays_from_max_to_min() -> None:
    values = [remaining_suspicion_s(c, 3, 4.0, 24.0) for c in range(5)]
    assert values[0] == 24.0
    assert values[3] == pytest.approx(4.0)
    assert values[4] == 4.0  # never below min
    assert all(x > y for x, y in itertools.pairwise(values[:4]))
    assert remaining_suspicion_s(0, 0, 4.0, 24.0) == 4.0  # no confirmations expected: min


def test_independent_confirmations_bring_the_deadline_forward() -> None:
    s = Suspicion.begin(10.0, A, n=10, cfg=LAN)
    assert s.k == 2
    assert s.deadline() == pytest.approx(10.0 + 24.0 + LAN.suspicion_grace_s)
    s1 = s.confirm(B)
    assert s1 is not None and s1.deadline() < s.deadline()
    s2 = s1.confirm(C)
    assert s2 is not None
    assert s2.deadline() == pytest.approx(10.0 + 4.0 + LAN.suspicion_grace_s)


def test_confirmation_by_the_suspector_a_repeat_or_past_k_counts_nothing() -> None:
    s = Suspicion.begin(0.0, A, n=10, cfg=LAN)
    assert s.confirm(A) is None
    s1 = s.confirm(B)
    assert s1 is not None and s1.confirm(B) is None
    s2 = s1.confirm(C)
    assert s2 is not None and s2.confirm(D) is None  # bounded at k confirmations
    assert s2.confirmations == 2


def test_awareness_clamps_and_scales() -> None:
    a = Awareness(8)
    assert a.apply(-1).score == 0
    assert a.apply(3).score == 3
    assert a.apply(100).score == 7
    assert a.apply(3).scale(1.0) == 4.0
    assert a.scale(0.5) == 0.5
