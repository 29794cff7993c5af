"""Warm sandboxed policy call vs the same class called in-process: added p50 latency.

Both run in this process, same run: the in-process baseline instantiates the example load
balancer class (examples/policies/least-busy) directly; the sandboxed side publishes the same
directory to a PoliciesService (real LMDB, real blobs, real worker process) and awaits
`handle.eval` on its warm worker. Target (issue 7): added p50 <= 300 µs.

Usage: .venv/bin/python bench/policy_sandbox.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosd.policies.archive import pack_dir
from aiosd.policies.service import PoliciesService, sandbox_root
from federation.identity import NodeKey
from storage import Store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policies" / "least-busy"
INPUT = {"mode": "task", "packet": {"session_id": "s1", "seq_no": 1},
         "instances": [{"instance_id": f"i{n}", "outstanding": n % 3} for n in range(8)]}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main(calls: int) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("least_busy", EXAMPLE / "code" / "function.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    local = mod.AIOSv1PolicyRule("bench", {}, {"penalty": 0})
    base: list[float] = []
    for _ in range(calls):
        t0 = time.perf_counter()
        local.eval({"penalty": 0}, INPUT, None)
        base.append(time.perf_counter() - t0)

    root = Path(tempfile.mkdtemp(prefix="aiosd-bench-policy-"))
    store = Store.open(root / "db")
    try:
        async with PoliciesService(root, store, NodeKey.generate()) as svc:
            await svc.publish("bench.least-busy:v1-a", pack_dir(EXAMPLE))
            h = await svc.runner.load("bench.least-busy:v1-a")
            for _ in range(200):  # warm the worker, the pipes and the JSON paths
                await h.eval(INPUT)
            boxed: list[float] = []
            for _ in range(calls):
                t0 = time.perf_counter()
                await h.eval(INPUT)
                boxed.append(time.perf_counter() - t0)
            python = svc.cfg.python
            uid = svc.cfg.run_as_uid
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(sandbox_root(root), ignore_errors=True)
    us = 1e6
    added = (statistics.median(boxed) - statistics.median(base)) * us
    out: dict[str, Any] = {
        "calls": calls, "worker_python": python, "worker_uid": uid,
        "inprocess_p50_us": round(statistics.median(base) * us, 1),
        "sandboxed_p50_us": round(statistics.median(boxed) * us, 1),
        "sandboxed_p99_us": round(_pct(boxed, 0.99) * us, 1),
        "added_p50_us": round(added, 1),
        "target_added_p50_us": 300,
    }
    out["ok"] = added <= 300
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    print(json.dumps(asyncio.run(main(ap.parse_args().calls)), indent=2))
