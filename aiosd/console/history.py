"""Metric history, sans-IO: two tiers (10 s for 6 h, 1 min for 7 days), downsampling, range queries.

A sample is {metric name: value} at a time. The 10 s tier keeps the last sample of each 10 s bucket;
the 1 min tier keeps the mean of each minute's samples (written when the minute is over). Keys are
`<tier>/<bucket start, 12 digits>` so a tier's records sort by time. A query names a range and a
step; it reads the finest tier that fits (step < 60: 10 s, else 1 min) and averages to the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiosd.console.errors import ConsoleError


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    step_s: int
    keep_s: int

    def key(self, bucket: int) -> str:
        return f"{self.name}/{bucket:012d}"

    def bucket(self, ts: float) -> int:
        return int(ts // self.step_s) * self.step_s


FINE = Tier("10s", 10, 6 * 3600)
COARSE = Tier("1m", 60, 7 * 86400)
TIERS = (FINE, COARSE)
MAX_POINTS = 5000
MAX_NAMES = 64


@dataclass
class Downsampler:
    """Turns samples into (tier, bucket, values) records to write."""

    _minute: int | None = None
    _sums: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def add(self, ts: float, values: dict[str, float]) -> list[tuple[Tier, int, dict[str, float]]]:
        out: list[tuple[Tier, int, dict[str, float]]] = [(FINE, FINE.bucket(ts), dict(values))]
        minute = COARSE.bucket(ts)
        if self._minute is not None and minute != self._minute and self._counts:
            out.append((COARSE, self._minute, {k: self._sums[k] / self._counts[k] for k in self._sums}))
            self._sums, self._counts = {}, {}
        self._minute = minute
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._counts[k] = self._counts.get(k, 0) + 1
        return out


@dataclass(frozen=True, slots=True)
class Query:
    start: int
    end: int
    step: int
    names: frozenset[str] | None

    @property
    def tier(self) -> Tier:
        return FINE if self.step < COARSE.step_s else COARSE


def parse_query(q: dict[str, str], now: float) -> Query:
    """from/to (unix seconds; default: the last hour), step (seconds, a multiple of 10), name (a,b).
    ConsoleError (400) names the bad field: malformed, reversed, older than kept, or too many points."""
    def num(name: str, default: float) -> float:
        raw = q.get(name)
        if raw is None:
            return default
        try:
            v = float(raw)
        except ValueError:
            raise ConsoleError(f"{name} must be a number (unix seconds)", field=name) from None
        if not 0 <= v < 1e11:
            raise ConsoleError(f"{name} is out of range", field=name)
        return v

    end = num("to", now)
    start = num("from", end - 3600)
    if start >= end:
        raise ConsoleError("from must be before to", field="from")
    if end - start > COARSE.keep_s:
        raise ConsoleError(f"the range is longer than the {COARSE.keep_s // 86400} days kept", field="from")
    step_f = num("step", FINE.step_s if end - start <= FINE.keep_s else COARSE.step_s)
    if step_f < FINE.step_s or step_f % FINE.step_s:
        raise ConsoleError("step must be a multiple of 10 seconds", field="step")
    step = int(step_f)
    if step < COARSE.step_s and start < now - FINE.keep_s:
        raise ConsoleError("10 s resolution is kept for 6 hours; use step=60 or more", field="step")
    if (end - start) / step > MAX_POINTS:
        raise ConsoleError(f"more than {MAX_POINTS} points; use a larger step", field="step")
    names = None
    if q.get("name"):
        parts = [n for n in q["name"].split(",") if n]
        if len(parts) > MAX_NAMES or any(len(n) > 128 for n in parts):
            raise ConsoleError(f"name: at most {MAX_NAMES} names of 128 characters", field="name")
        names = frozenset(parts)
    return Query(int(start), int(end), step, names)


def aggregate(q: Query, rows: list[tuple[int, dict[str, float]]]) -> dict[str, object]:
    """Rows (bucket, values) in time order → columns at q.step: {"t": [times], "series": {name: [values]}}
    (a value is the mean of the step's samples, None where the metric had none)."""
    rows = [(b, v) for b, v in rows if q.start <= b < q.end]
    if q.step != q.tier.step_s:
        groups: dict[int, list[dict[str, float]]] = {}
        for b, v in rows:
            groups.setdefault(q.start + (b - q.start) // q.step * q.step, []).append(v)
        rows = [(t, _mean(vs)) for t, vs in sorted(groups.items())]
    names = q.names if q.names is not None else set().union(*(v.keys() for _, v in rows))
    return {"t": [float(b) for b, _ in rows],
            "series": {n: [v.get(n) for _, v in rows] for n in sorted(names)}}


def _mean(samples: list[dict[str, float]]) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for v in samples:
        for k, x in v.items():
            sums[k] = sums.get(k, 0.0) + x
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


__all__ = ["COARSE", "FINE", "TIERS", "Downsampler", "Query", "Tier", "aggregate", "parse_query"]
