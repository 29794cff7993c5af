"""Lifeguard local health awareness: a score that slows our own probing when we look unhealthy.

A node that misses acks or has to refute suspicions about itself is more likely the slow one; it
stretches its probe interval so it does not accuse healthy peers (Lifeguard §3.1, memberlist awareness.go).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Awareness:
    """Health score in [0, max_multiplier - 1]; 0 is healthy."""

    max_multiplier: int
    score: int = 0

    def apply(self, delta: int) -> Awareness:
        """The awareness after adding `delta`, clamped to its range."""
        score = min(max(self.score + delta, 0), self.max_multiplier - 1)
        return self if score == self.score else Awareness(self.max_multiplier, score)

    def scale(self, timeout_s: float) -> float:
        """`timeout_s` stretched by our health: timeout * (score + 1)."""
        return timeout_s * (self.score + 1)


__all__ = ["Awareness"]
