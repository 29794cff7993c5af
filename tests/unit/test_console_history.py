"""Metric history: tiers, downsampling, query validation, and the LMDB driver's bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiosd.console.errors import ConsoleError
from aiosd.console.history import COARSE, FINE, Downsampler, aggregate, parse_query
from aiosd.console.historylog import HISTORY, HistoryLog
from storage import Store

NOW = 1_800_000_000.0


def test_the_minute_tier_is_the_mean_of_its_samples() -> None:
    d = Downsampler()
    out = []
    for i in range(13):  # 0..120 s every 10 s
        out += d.add(NOW + i * 10, {"cpu": float(i)})
    coarse = [(b, v) for t, b, v in out if t is COARSE]
    fine = [v["cpu"] for t, _, v in out if t is FINE]
    assert fine == [float(i) for i in range(13)]
    m0 = COARSE.bucket(NOW)
    assert coarse[0][0] == m0
    # NOW starts a minute: the first minute holds samples 0..5, the next 6..11; 12 is still open.
    assert NOW % 60 == 0 and len(coarse) == 2
    assert coarse[0][1]["cpu"] == pytest.approx(2.5) and coarse[1][1]["cpu"] == pytest.approx(8.5)


@pytest.mark.parametrize(("q", "field"), [
    ({"from": "yesterday"}, "from"), ({"to": "nan"}, "to"), ({"from": "-5"}, "from"),
    ({"from": str(NOW), "to": str(NOW - 10)}, "from"), ({"from": str(NOW - 8 * 86400), "to": str(NOW)}, "from"),
    ({"step": "7"}, "step"), ({"step": "0"}, "step"), ({"step": "1e300"}, "step"),
    ({"from": str(NOW - 86400), "step": "10"}, "step"),  # 10 s is kept for 6 h only
    ({"from": str(NOW - 7 * 86400), "step": "60"}, "step"),  # 10080 points: too many
    ({"name": ",".join(f"m{i}" for i in range(100))}, "name"),
])
def test_bad_queries_name_the_field(q: dict[str, str], field: str) -> None:
    with pytest.raises(ConsoleError) as e:
        parse_query(q, NOW)
    assert e.value.field == field


def test_a_query_picks_the_tier_and_averages_to_the_step() -> None:
    q = parse_query({"from": str(NOW - 6 * 3600), "to": str(NOW)}, NOW)
    assert (q.step, q.tier) == (10, FINE)
    q = parse_query({"from": str(NOW - 86400), "to": str(NOW)}, NOW)
    assert (q.step, q.tier) == (60, COARSE)
    q = parse_query({"from": "1000", "to": "1100", "step": "50", "name": "a"}, 1100)
    rows = [(1000 + i * 10, {"a": float(i), "b": 1.0}) for i in range(10)]
    assert aggregate(q, rows) == {"t": [1000.0, 1050.0], "series": {"a": [2.0, 7.0]}}
    q = parse_query({"from": "1000", "to": "1030"}, 1100)
    assert aggregate(q, [(1000, {"a": 1.0}), (1010, {"b": 2.0}), (1040, {"a": 9.0})]) == {
        "t": [1000.0, 1010.0], "series": {"a": [1.0, None], "b": [None, 2.0]}}


def test_the_driver_keeps_6h_fine_and_7d_coarse_and_serves_ranges(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    try:
        h = HistoryLog(store, lambda: None)
        t0 = NOW - 7 * 3600
        for i in range(7 * 360):  # 7 hours of 10 s samples
            h.add(t0 + i * 10, {"cpu": float(i % 100), "mem": 1.0})
        keys = [k.decode() for k, _ in store.scan(HISTORY)]
        fine = [k for k in keys if k.startswith("10s/")]
        coarse = [k for k in keys if k.startswith("1m/")]
        assert 2159 <= len(fine) <= 2161  # 6 h at 10 s; the seventh hour's oldest were deleted
        assert len(coarse) == 7 * 60 - 1  # every finished minute
        last = t0 + (7 * 360 - 1) * 10
        out = h.query(parse_query({"from": str(last - 3600), "to": str(last + 1), "name": "cpu"}, last))
        series = out["series"]
        assert isinstance(series, dict) and list(series) == ["cpu"] and len(series["cpu"]) == 361
        assert series["cpu"][-1] == float((7 * 360 - 1) % 100)
        out = h.query(parse_query({"from": str(t0), "to": str(last), "step": "3600"}, last))
        series = out["series"]
        assert isinstance(series, dict) and len(series["mem"]) in (7, 8) and set(series["mem"]) == {1.0}
    finally:
        store.close()


def test_the_fine_tier_in_memory_answers_what_lmdb_holds(tmp_path: Path) -> None:
    # A log that has answered a query (its fine tier is in memory) keeps answering what a fresh log
    # reading LMDB answers, across appends, a repeated bucket and the 6 h cut.
    store = Store.open(tmp_path / "db")
    try:
        h = HistoryLog(store, lambda: None)
        t0 = NOW - 7 * 3600
        h.add(t0, {"cpu": 1.0})
        h.query(parse_query({"from": str(t0 - 10), "to": str(t0 + 10)}, t0))  # loads the tier into memory
        for i in range(1, 7 * 360):
            h.add(t0 + i * 10, {"cpu": float(i % 7), "mem": float(i)})
        last = t0 + (7 * 360 - 1) * 10
        h.add(last + 3, {"cpu": 99.0, "mem": 0.5})  # same 10 s bucket: replaces the sample
        q = parse_query({"from": str(last - 6 * 3600 + 20), "to": str(last + 10)}, last + 3)
        live, fresh = h.query(q), HistoryLog(store, lambda: None).query(q)
        assert live == fresh
        series = live["series"]
        assert isinstance(series, dict) and series["cpu"][-1] == 99.0 and len(series["cpu"]) == 2159
    finally:
        store.close()
