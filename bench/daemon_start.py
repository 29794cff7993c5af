"""Daemon start → READY=1 (systemd notify) time and idle RSS, over several real starts.

Targets (issue #2): start to READY <= 1.0 s; idle RSS <= 60 MB.
The baseline in the same run is a bare `python -c "import aiohttp"` start, the floor for any
Python daemon on this machine.
Run: .venv/bin/python bench/daemon_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.daemons import Daemon


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    floor = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import aiohttp, pydantic, lmdb, nacl.signing"], check=True)
        floor.append(time.perf_counter() - t0)
    ready, rss = [], []
    for i in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="aiosd-start-"))
        d = Daemon(root, f"n{i}").start()
        try:
            ready.append(d.ready_s or 0.0)
            time.sleep(1.0)  # let it settle into idle before measuring memory
            rss.append(psutil.Process(d.pid).memory_info().rss / 2**20)
        finally:
            d.stop()
    print(f"python + imports floor   p50 {statistics.median(floor):.3f} s")
    print(
        f"start -> READY=1         p50 {statistics.median(ready):.3f} s  max {max(ready):.3f} s "
        f"(first start includes `init`)"
    )
    print(f"ratio to floor           {statistics.median(ready) / statistics.median(floor):.2f}")
    print(f"idle RSS                 p50 {statistics.median(rss):.1f} MB  max {max(rss):.1f} MB")


if __name__ == "__main__":
    main()
