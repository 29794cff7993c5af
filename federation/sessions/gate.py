"""Handshake admission (sans-IO): a token bucket per source address and a cap on handshakes in
progress, so a flood of handshakes costs bounded CPU and never touches established sessions.

Sources are chosen by the peer, so the bucket map is capped (oldest evicted first: an evicted
source starts with a full bucket again, which only ever lets through `burst` more attempts).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from federation.errors import SessionReason


@dataclass(frozen=True, slots=True)
class GateLimits:
    """Handshake admission limits (units in names; defaults suit a LAN of hundreds of nodes)."""

    per_source_rate_s: float = 20.0  # handshakes per second refilled per source address
    per_source_burst: int = 64  # a restart of many daemons behind one address fits this
    max_pending: int = 64  # handshakes in progress at once (each holds a socket and a timer)
    max_sources: int = 4096


DEFAULT_GATE = GateLimits()


class HandshakeGate:
    """`admit(source, now)` before a handshake starts, `done()` when it ends (either way)."""

    def __init__(self, limits: GateLimits = DEFAULT_GATE) -> None:
        self.limits = limits
        self.pending = 0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source → (tokens, at)
        self.evictions = 0

    def admit(self, source: str, now: float) -> SessionReason | None:
        """None when the handshake may start (and counts as pending), else why not."""
        lim = self.limits
        if self.pending >= lim.max_pending:
            return SessionReason.BUSY
        tokens, at = self._buckets.pop(source, (float(lim.per_source_burst), now))
        tokens = min(float(lim.per_source_burst), tokens + max(0.0, now - at) * lim.per_source_rate_s)
        ok = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > lim.max_sources:
            self._buckets.popitem(last=False)
            self.evictions += 1
        if not ok:
            return SessionReason.RATE_LIMITED
        self.pending += 1
        return None

    def done(self) -> None:
        self.pending = max(0, self.pending - 1)


__all__ = ["DEFAULT_GATE", "GateLimits", "HandshakeGate"]
