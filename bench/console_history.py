"""Metric history query (issue #20 target: a 6 h query for one node <= 50 ms).

Writes 7 h of 10 s samples (--metrics names each, default 40) through HistoryLog into a fresh LMDB
store, then times the 6 h query at 10 s (2160 points per metric) and a 7 d query at 1 h, against a
baseline in the same run: a bare scan of the same tier's records (LMDB read + msgpack decode, no
aggregation). Prints medians and ratios. Run: .venv/bin/python bench/console_history.py [--metrics 40]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import msgpack

from aiosd.console.history import parse_query  # after sys.path
from aiosd.console.historylog import HISTORY, HistoryLog
from storage import Store

ROUNDS = 15


def median_ms(fn: object, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = Store.open(pathlib.Path(d) / "db")
        try:
            h = HistoryLog(store, lambda: None)
            now = 1_800_000_000.0
            t0 = now - 7 * 3600
            t = time.perf_counter()
            for i in range(7 * 360):
                h.add(t0 + i * 10, {f"metric.{j}": float(i * j % 97) for j in range(args.metrics)})
            write_s = time.perf_counter() - t
            q6h = parse_query({"from": str(now - 6 * 3600), "to": str(now)}, now)
            q7d = parse_query({"from": str(now - 7 * 86400 + 60), "to": str(now), "step": "3600"}, now)

            def scan_fine() -> int:
                with store.snapshot() as snap:
                    return sum(len(msgpack.unpackb(raw)) for k, raw in snap.scan(HISTORY, "10s/"))

            base = median_ms(scan_fine)
            t = time.perf_counter()
            HistoryLog(store, lambda: None).query(q6h)  # a fresh log: loads the fine tier from LMDB
            first = (time.perf_counter() - t) * 1000
            fine = median_ms(lambda: h.query(q6h))
            coarse = median_ms(lambda: h.query(q7d))
            cols = h.query(q6h)["series"]
            pts = sum(len(v) for v in cols.values()) if isinstance(cols, dict) else 0
            print(f"write: {7 * 360} samples x {args.metrics} metrics in {write_s:.2f} s "
                  f"({write_s / (7 * 360) * 1000:.2f} ms/sample)")
            print(f"baseline scan of the 10 s tier: {base:.1f} ms")
            print(f"6 h query, 10 s step ({pts} points): {fine:.1f} ms  ratio to scan {fine / base:.2f}  "
                  f"target <= 50 ms: {'met' if fine <= 50 else 'MISSED'}")
            print(f"first 6 h query of a fresh log (loads the 10 s tier into memory): {first:.1f} ms")
            print(f"7 d query, 1 h step: {coarse:.1f} ms  ratio to scan {coarse / base:.2f}")
        finally:
            store.close()


if __name__ == "__main__":
    main()
