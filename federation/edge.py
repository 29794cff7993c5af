"""Bounded edges for the HTTP listeners (the p2p port, the local TCP API): the pure parts.

`RejectionLog` counts every rejection by reason and says whether to log it: once per
(reason, source) per window, so a flood of bad requests costs a counter increment, not a log
line each (and never a traceback). `SourceCaps` bounds open connections per source address.
Sans-IO: the caller passes the clock; the aiohttp glue lives in federation/edge_http.py.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

# Log a given (reason, source) at most once per this many seconds.
LOG_WINDOW_S = 60.0
# (reason, source) pairs remembered for the window; beyond, the oldest is forgotten (and may log again).
MAX_LOG_KEYS = 4096


@dataclass
class RejectionLog:
    window_s: float = LOG_WINDOW_S
    max_keys: int = MAX_LOG_KEYS
    counts: Counter[str] = field(default_factory=Counter)
    _last: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)

    def reject(self, reason: str, source: str, now: float) -> bool:
        """Count one rejection; True when the caller should log it (first in its window)."""
        self.counts[reason] += 1
        key = (reason, source)
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True


@dataclass
class SourceCaps:
    """At most `per_source` open connections per source address and `total` in all."""

    per_source: int
    total: int
    _open: Counter[str] = field(default_factory=Counter)

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def admit(self, source: str) -> str | None:
        """Take a slot for `source`; None when admitted, else the reason it is refused."""
        if self._open[source] >= self.per_source:
            return "per_source_cap"
        if self.open >= self.total:
            return "total_cap"
        self._open[source] += 1
        return None

    def release(self, source: str) -> None:
        self._open[source] -= 1
        if self._open[source] <= 0:
            del self._open[source]


# Reasons a connection is refused at accept (SourceCaps.admit); the counters list each, zero or not.
REFUSE_REASONS = ("per_source_cap", "total_cap")
IDLE_CLOSE = "idle_timeout"  # closed by the server: no complete request in time (idle, slowloris, partial line)
BAD_HTTP = "bad_http"  # malformed HTTP (a NUL byte in a header, a bad request line): 400
UNMASKED = "unmasked_frame"  # a WebSocket client frame not masked (RFC 6455 §5.1): connection closed


def edge_counters(rejections: RejectionLog) -> dict[str, Any]:
    """The edge counters of one listener, for /v1/metrics (`edge`) and /metrics."""
    c = rejections.counts
    return {"connections_refused": {r: c[r] for r in REFUSE_REASONS}, "idle_closes": c[IDLE_CLOSE],
            "bad_requests": c[BAD_HTTP], "unmasked_frames": c[UNMASKED]}


__all__ = ["BAD_HTTP", "IDLE_CLOSE", "LOG_WINDOW_S", "MAX_LOG_KEYS", "REFUSE_REASONS", "UNMASKED", "RejectionLog",
           "SourceCaps", "edge_counters"]
