"""What ownership and limits cost the process driver, against baselines in the same run.

1. The orphan scan a driver runs at start (`owner.scan_marked`: every process's environment) vs a
   plain `psutil.process_iter` over the same processes (medians of --scans runs).
2. Process-driver instance start → first healthy answer with `resources` (cgroup v1, and the
   rlimit fallback) vs the same instance without, alternating, medians of --runs each.

Usage: .venv/bin/python bench/runtime_owners_limits.py [--runs 7] [--scans 7]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from runtime.client import InstanceClient
from runtime.drivers import owner as own
from runtime.drivers.limits import CgroupLimits
from runtime.drivers.process import ProcessDriver
from runtime.spec import InstanceSpec, Resources
from runtime.testing import write_standin_block


def scans(n: int) -> dict[str, Any]:
    base, scan = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        procs = list(psutil.process_iter(["pid"]))
        base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        own.scan_marked()
        scan.append(time.perf_counter() - t0)
    b, s = statistics.median(base), statistics.median(scan)
    return {"processes": len(procs), "process_iter_ms": round(b * 1000, 2), "scan_marked_ms": round(s * 1000, 2),
            "ratio": round(s / b, 2)}


async def start_to_healthy(driver: ProcessDriver, client: InstanceClient, spec: InstanceSpec, socks: Path) -> float:
    d = socks / spec.instance_id
    d.mkdir()
    t0 = time.perf_counter()
    obs = await driver.start(spec, str(d), ())
    while not await client.health(obs.endpoint, 2):
        if time.perf_counter() - t0 > 60:
            raise SystemExit("no answer")
        await asyncio.sleep(0.002)
    took = time.perf_counter() - t0
    await driver.remove(spec.instance_id)
    shutil.rmtree(d, ignore_errors=True)
    return took


async def starts(runs: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="aiosd-bench-ol-"))
    socks = Path(tempfile.mkdtemp(prefix="aiosd-bol-", dir="/tmp"))
    block = write_standin_block(data / "standin")
    base = InstanceSpec(block_id="b", instance_id="x", block_dir=block)
    res = Resources(cpus=1.0, memory_mb=256, pids=128)
    times: dict[str, list[float]] = {"none": [], "cgroup": [], "rlimit": []}
    try:
        async with ProcessDriver(data / "c", "bench-ol") as cg, \
                ProcessDriver(data / "r", "bench-ol", limits=CgroupLimits(force_rlimit=True)) as rl, \
                InstanceClient() as client:
            for n in range(runs + 1):  # the first round warms the page cache
                row = {
                    "none": await start_to_healthy(cg, client, dataclasses.replace(base, instance_id=f"n{n}"), socks),
                    "cgroup": await start_to_healthy(cg, client, dataclasses.replace(
                        base, instance_id=f"c{n}", resources=res), socks),
                    "rlimit": await start_to_healthy(rl, client, dataclasses.replace(
                        base, instance_id=f"r{n}", resources=res), socks),
                }
                if n:
                    for k, v in row.items():
                        times[k].append(v)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(socks, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"runs": runs, **{f"{k}_start_to_healthy_ms": round(v * 1000, 1) for k, v in med.items()},
            "cgroup_ratio": round(med["cgroup"] / med["none"], 3), "rlimit_ratio": round(med["rlimit"] / med["none"], 3)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--scans", type=int, default=7)
    a = ap.parse_args()
    print(json.dumps({"orphan_scan": scans(a.scans), "start_with_limits": asyncio.run(starts(a.runs))}, indent=2))
