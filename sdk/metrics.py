"""Instance metrics: the AIOS defaults plus user-registered counters, gauges and histograms.

Thread-safe (callbacks run in worker threads); rendered as Prometheus text format 0.0.4. Time comes from
an injectable monotonic clock. Serving the text is server.py's job.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sdk.errors import MetricError

STAGES = ("on_preprocess", "on_data", "end_to_end")
DEFAULT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A label set per distinct value combination; user code can create them from task data, so cap them
# (Prometheus guidance: keep cardinality in the low thousands per metric).
MAX_SERIES_PER_METRIC = 1000
# fps is measured over the last 10 whole seconds: long enough to smooth bursts, short enough to follow load.
FPS_WINDOW_S = 10

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = frozenset({"block_id", "instance_id", "le"})

LabelValues = tuple[str, ...]


@dataclass(slots=True)
class _HistogramSeries:
    buckets: list[int]
    total: float = 0.0
    count: int = 0


@dataclass(slots=True)
class _Metric:
    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    values: dict[LabelValues, float] = field(default_factory=dict)
    hist: dict[LabelValues, _HistogramSeries] = field(default_factory=dict)
    dropped: int = 0


class _Rate:
    """Events per second over the last FPS_WINDOW_S whole seconds, in a fixed ring of 1 s buckets."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._secs = [-1] * FPS_WINDOW_S
        self._counts = [0] * FPS_WINDOW_S

    def record(self, now: float) -> None:
        sec = int(now)
        i = sec % FPS_WINDOW_S
        if self._secs[i] != sec:
            self._secs[i] = sec
            self._counts[i] = 0
        self._counts[i] += 1

    def per_second(self, now: float) -> float:
        sec = int(now)
        n = sum(c for s, c in zip(self._secs, self._counts) if sec - FPS_WINDOW_S < s <= sec)
        span = min(float(FPS_WINDOW_S), max(1.0, now - self._start))
        return n / span


def _observe(m: _Metric, key: LabelValues, value: float) -> None:
    s = m.hist.get(key)
    if s is None:
        s = m.hist[key] = _HistogramSeries([0] * len(m.buckets))
    i = bisect.bisect_left(m.buckets, value)
    if i < len(m.buckets):
        s.buckets[i] += 1
    s.total += value
    s.count += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class AIOSMetrics:
    """The metrics object a block gets as `context.metrics` (AIOS names and calls)."""

    def __init__(self, block_id: str = "", instance_id: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._const = f'block_id="{_escape(block_id)}",instance_id="{_escape(instance_id)}"'
        self._rates = {s: _Rate(clock()) for s in STAGES}
        for stage in STAGES:
            self.register_histogram(f"{stage}_latency", f"{stage} latency in seconds")
            self.register_counter(f"{stage}_count", f"{stage} calls completed")
            self.register_gauge(f"{stage}_fps", f"{stage} calls per second over the last {FPS_WINDOW_S} s")
        self.register_gauge("queue_length", "tasks admitted and waiting for a worker")

    # -- registration -------------------------------------------------------------------------------
    def register_counter(self, name: str, description: str = "", labels: Sequence[str] = ()) -> None:
        """Declare a counter (idempotent for the same name, type and labels)."""
        self._register(name, "counter", description, labels, ())

    def register_gauge(self, name: str, description: str = "", labels: Sequence[str] = ()) -> None:
        """Declare a gauge."""
        self._register(name, "gauge", description, labels, ())

    def register_histogram(self, name: str, description: str = "", buckets: Iterable[float] | None = None,
                           labels: Sequence[str] = ()) -> None:
        """Declare a histogram; `buckets` are upper bounds (seconds for latencies)."""
        bounds = tuple(sorted(float(b) for b in (buckets if buckets is not None else DEFAULT_BUCKETS_S)))
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise MetricError(f"metric {name}: buckets must be finite numbers")
        self._register(name, "histogram", description, labels, bounds)

    def _register(self, name: str, kind: str, help_: str, labels: Sequence[str],
                  buckets: tuple[float, ...]) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise MetricError(f"metric name {name!r}: must match {_NAME.pattern}")
        labels_t = tuple(labels)
        for lb in labels_t:
            if not isinstance(lb, str) or not _LABEL.match(lb) or lb in _RESERVED_LABELS:
                raise MetricError(f"metric {name}: label {lb!r} is not a valid, unreserved label name")
        with self._lock:
            old = self._metrics.get(name)
            if old is not None:
                if old.kind != kind or old.labels != labels_t:
                    raise MetricError(f"metric {name}: already registered as a {old.kind} with labels {old.labels}")
                return
            self._metrics[name] = _Metric(name, kind, " ".join(str(help_).split()), labels_t, buckets)

    # -- updates ------------------------------------------------------------------------------------
    def increment_counter(self, name: str, value: float = 1.0, labels: Mapping[str, str] | None = None) -> None:
        """Add `value` (>= 0) to a counter."""
        if value < 0:
            raise MetricError(f"metric {name}: a counter only goes up (got {value})")
        with self._lock:
            m, key = self._series(name, "counter", labels)
            if key is not None:
                m.values[key] = m.values.get(key, 0.0) + value

    def set_gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set a gauge."""
        with self._lock:
            m, key = self._series(name, "gauge", labels)
            if key is not None:
                m.values[key] = float(value)

    def observe_histogram(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record one observation."""
        with self._lock:
            m, key = self._series(name, "histogram", labels)
            if key is not None:
                _observe(m, key, value)

    def _series(self, name: str, kind: str, labels: Mapping[str, str] | None) -> tuple[_Metric, LabelValues | None]:
        m = self._metrics.get(name)
        if m is None:
            raise MetricError(f"metric {name}: not registered (call register_{kind} first)")
        if m.kind != kind:
            raise MetricError(f"metric {name}: is a {m.kind}, not a {kind}")
        given = dict(labels or {})
        if set(given) != set(m.labels):
            raise MetricError(f"metric {name}: labels must be exactly {list(m.labels)}, got {sorted(given)}")
        key = tuple(str(given[lb]) for lb in m.labels)
        if key not in m.values and key not in m.hist and len(m.values) + len(m.hist) >= MAX_SERIES_PER_METRIC:
            m.dropped += 1
            return m, None
        return m, key

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Current value of a counter or gauge, or the observation count of a histogram (0 if never set)."""
        with self._lock:
            m = self._metrics.get(name)
            if m is None:
                raise MetricError(f"metric {name}: not registered")
            key = tuple(str((labels or {}).get(lb, "")) for lb in m.labels)
            if m.kind == "histogram":
                s = m.hist.get(key)
                return float(s.count) if s else 0.0
            return m.values.get(key, 0.0)

    # -- the AIOS defaults ----------------------------------------------------------------------------
    def record_stage(self, stage: str, latency_s: float) -> None:
        """One completed call of a default stage (on_preprocess, on_data, end_to_end)."""
        now = self._clock()
        with self._lock:  # one lock round per call: this runs three times per task
            _observe(self._metrics[f"{stage}_latency"], (), latency_s)
            count = self._metrics[f"{stage}_count"]
            count.values[()] = count.values.get((), 0.0) + 1
            self._rates[stage].record(now)

    # -- rendering ------------------------------------------------------------------------------------
    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        now = self._clock()
        with self._lock:
            for stage, rate in self._rates.items():
                self._metrics[f"{stage}_fps"].values[()] = rate.per_second(now)
            lines: list[str] = []
            for m in self._metrics.values():
                lines.append(f"# HELP {m.name} {m.help}")
                lines.append(f"# TYPE {m.name} {m.kind}")
                if m.kind == "histogram":
                    series = m.hist or ({(): _HistogramSeries([0] * len(m.buckets))} if not m.labels else {})
                    for key, s in series.items():
                        lbl = self._labels(m, key)
                        acc = 0
                        for bound, c in zip(m.buckets, s.buckets):
                            acc += c
                            lines.append(f'{m.name}_bucket{{{lbl},le="{_fmt(bound)}"}} {acc}')
                        lines.append(f'{m.name}_bucket{{{lbl},le="+Inf"}} {s.count}')
                        lines.append(f"{m.name}_sum{{{lbl}}} {_fmt(s.total)}")
                        lines.append(f"{m.name}_count{{{lbl}}} {s.count}")
                else:
                    values = m.values or ({(): 0.0} if not m.labels else {})
                    for key, v in values.items():
                        lines.append(f"{m.name}{{{self._labels(m, key)}}} {_fmt(v)}")
            dropped = {m.name: m.dropped for m in self._metrics.values() if m.dropped}
        lines.append("# HELP metrics_series_dropped updates dropped because a metric hit its series cap")
        lines.append("# TYPE metrics_series_dropped counter")
        for name, n in dropped.items():
            lines.append(f'metrics_series_dropped{{{self._const},metric="{name}"}} {n}')
        return "\n".join(lines) + "\n"

    def _labels(self, m: _Metric, key: LabelValues) -> str:
        extra = "".join(f',{lb}="{_escape(v)}"' for lb, v in zip(m.labels, key))
        return self._const + extra
