"""SWIM/Lifeguard formulas (free functions) and the suspicion timer that decays with confirmations.

Formulas follow memberlist `util.go` and `suspicion.go`; nothing here holds member state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from federation.membership.config import SwimConfig
from federation.sansio import NodeId


def suspicion_timeout_s(n: int, cfg: SwimConfig) -> float:
    """Minimum suspicion timeout: mult * max(1, log10 n) * probe interval (memberlist suspicionTimeout)."""
    node_scale = max(1.0, math.log10(max(1, n)))
    return cfg.suspicion_mult * node_scale * cfg.probe_interval_s


def suspicion_max_timeout_s(n: int, cfg: SwimConfig) -> float:
    """Lifeguard: a fresh suspicion waits this long unless independent confirmations arrive."""
    return cfg.suspicion_max_timeout_mult * suspicion_timeout_s(n, cfg)


def expected_confirmations(n: int, cfg: SwimConfig) -> int:
    """Confirmations that shrink a suspicion to its minimum (memberlist: mult - 2, 0 if too few nodes).

    `n` counts us and the suspect, so only n - 2 members can confirm.
    """
    k = cfg.suspicion_mult - 2
    return 0 if n - 2 < k else max(0, k)


def retransmit_limit(n: int, mult: int) -> int:
    """How many times one update is piggybacked: mult * ceil(log10(n + 1)) (memberlist retransmitLimit)."""
    return mult * math.ceil(math.log10(max(0, n) + 1))


def push_pull_interval_s(n: int, cfg: SwimConfig) -> float:
    """Push-pull period, stretched above 32 nodes so sync load stays flat (memberlist pushPullScale)."""
    if n <= 32:
        return cfg.push_pull_interval_s
    multiplier = math.ceil(math.log2(n) - math.log2(32)) + 1
    return cfg.push_pull_interval_s * multiplier


def remaining_suspicion_s(confirmations: int, k: int, min_s: float, max_s: float) -> float:
    """Lifeguard timeout after `confirmations` of `k` expected: from max down to min, logarithmically."""
    if k < 1:
        return min_s
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    return max(min_s, max_s - frac * (max_s - min_s))


@dataclass(frozen=True, slots=True)
class Suspicion:
    """One suspicion: who started it, who confirmed it (at most k others), and its bounds."""

    started_at: float
    suspector: NodeId
    k: int
    min_s: float
    max_s: float
    confirmers: frozenset[NodeId] = frozenset()

    @classmethod
    def begin(cls, now: float, suspector: NodeId, n: int, cfg: SwimConfig) -> Suspicion:
        """A new suspicion raised by `suspector`, sized for a cluster of `n` live members."""
        return cls(
            started_at=now,
            suspector=suspector,
            k=expected_confirmations(n, cfg),
            min_s=suspicion_timeout_s(n, cfg) + cfg.suspicion_grace_s,
            max_s=suspicion_max_timeout_s(n, cfg) + cfg.suspicion_grace_s,
        )

    @property
    def confirmations(self) -> int:
        return len(self.confirmers)

    def confirm(self, by: NodeId) -> Suspicion | None:
        """The suspicion with one more independent confirmation, or None if `by` adds nothing."""
        if self.confirmations >= self.k or by == self.suspector or by in self.confirmers:
            return None
        return Suspicion(
            self.started_at, self.suspector, self.k, self.min_s, self.max_s, self.confirmers | {by}
        )

    def deadline(self) -> float:
        """Virtual/monotonic time at which the suspect is declared dead."""
        return self.started_at + remaining_suspicion_s(self.confirmations, self.k, self.min_s, self.max_s)


__all__ = [
    "Suspicion",
    "expected_confirmations",
    "push_pull_interval_s",
    "remaining_suspicion_s",
    "retransmit_limit",
    "suspicion_max_timeout_s",
    "suspicion_timeout_s",
]
