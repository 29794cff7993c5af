"""AIOSMetrics: the AIOS defaults, user metrics, Prometheus text, bounds and clear errors."""

from __future__ import annotations

import pytest

from sdk import AIOSMetrics, MetricError
from sdk.metrics import FPS_WINDOW_S, MAX_SERIES_PER_METRIC


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.replace('block_id="b",instance_id="i"', "").replace("{}", "").replace("{,", "{")] = float(value)
    return out


def test_defaults_render_with_zero_values() -> None:
    text = AIOSMetrics("b", "i").render()
    s = samples(text)
    for stage in ("on_preprocess", "on_data", "end_to_end"):
        assert s[f"{stage}_count"] == 0
        assert s[f"{stage}_fps"] == 0
        assert s[f"{stage}_latency_count"] == 0
        assert f"# TYPE {stage}_latency histogram" in text
    assert s["queue_length"] == 0


def test_record_stage_fills_histogram_counter_and_fps() -> None:
    clock = Clock()
    m = AIOSMetrics("b", "i", clock=clock)
    for latency in (0.0004, 0.003, 0.2):
        m.record_stage("on_data", latency)
    clock.now += FPS_WINDOW_S - 0.5
    s = samples(m.render())
    assert s["on_data_count"] == 3
    assert s['on_data_latency_bucket{le="0.0005"}'] == 1
    assert s['on_data_latency_bucket{le="0.005"}'] == 2
    assert s['on_data_latency_bucket{le="+Inf"}'] == 3
    assert s["on_data_latency_sum"] == pytest.approx(0.2034)
    assert s["on_data_fps"] == pytest.approx(3 / (FPS_WINDOW_S - 0.5))
    clock.now += FPS_WINDOW_S + 1  # the window moved past every event
    assert samples(m.render())["on_data_fps"] == 0


def test_user_metrics_with_labels_and_escaping() -> None:
    m = AIOSMetrics("b", "i")
    m.register_counter("frames", "frames seen", labels=("camera",))
    m.register_gauge("temp", "degrees")
    m.register_histogram("size", "bytes", buckets=[10, 100])
    m.increment_counter("frames", labels={"camera": 'a"b\\c\n'})
    m.increment_counter("frames", 2, labels={"camera": 'a"b\\c\n'})
    m.set_gauge("temp", 21.5)
    m.observe_histogram("size", 50)
    text = m.render()
    assert 'frames{block_id="b",instance_id="i",camera="a\\"b\\\\c\\n"} 3' in text
    s = samples(text)
    assert s["temp"] == 21.5
    assert s['size_bucket{le="10"}'] == 0 and s['size_bucket{le="100"}'] == 1
    assert m.value("frames", {"camera": 'a"b\\c\n'}) == 3 and m.value("size") == 1
    m.register_counter("frames", "again", labels=("camera",))  # idempotent


@pytest.mark.parametrize(("call", "match"), [
    (lambda m: m.increment_counter("nope"), "not registered"),
    (lambda m: m.set_gauge("on_data_count", 1), "is a counter"),
    (lambda m: m.register_gauge("on_data_count"), "already registered"),
    (lambda m: m.register_counter("bad name"), "must match"),
    (lambda m: m.register_counter("x", labels=("le",)), "label"),
    (lambda m: m.register_histogram("h", buckets=[]), "buckets"),
    (lambda m: m.increment_counter("on_data_count", -1), "only goes up"),
    (lambda m: m.increment_counter("on_data_count", labels={"x": "1"}), "labels must be exactly"),
])
def test_misuse_raises_a_clear_metric_error(call: object, match: str) -> None:
    m = AIOSMetrics()
    with pytest.raises(MetricError, match=match):
        call(m)  # type: ignore[operator]  # table of callables


def test_label_sets_are_capped_and_drops_counted() -> None:
    m = AIOSMetrics("b", "i")
    m.register_counter("hits", labels=("user",))
    for i in range(MAX_SERIES_PER_METRIC + 5):
        m.increment_counter("hits", labels={"user": str(i)})
    text = m.render()
    assert text.count("hits{") == MAX_SERIES_PER_METRIC
    assert 'metrics_series_dropped{block_id="b",instance_id="i",metric="hits"} 5' in text
    m.increment_counter("hits", labels={"user": "0"})  # existing series still update
    assert m.value("hits", {"user": "0"}) == 2
