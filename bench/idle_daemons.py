"""Idle cost of membership: N real `aiosd run` daemons joined on loopback, CPU of all together.

Starts N daemons (127.0.0.2.., default settings = lan profile), joins N-1 with one token, waits until
every node sees all N alive, then measures the CPU time of all daemon processes over a window.
Baseline in the same run: the same N daemons before they are joined would need a second start,
so the reference is the target (<= 10% of one core for 10 daemons) plus per-daemon numbers.

Usage: .venv/bin/python bench/idle_daemons.py [--nodes 10] [--window 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from tests.daemons import Daemon, cli
from tests.waiting import wait_sync


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="aiosd-bench-idle-"))
    nodes: list[Daemon] = []
    # --only-membership: the same daemons with no other service, to attribute the cost.
    prefix = [sys.executable, str(Path(__file__).with_name("membership_only_run.py"))] if args.only_membership else []
    try:
        first = Daemon(root, "n1", p2p_host="127.0.0.2", prefix=prefix).start()
        nodes.append(first)
        tok = json.loads(first.cli("token", "create", "--uses", str(args.nodes), "--json").stdout)["token"]
        for i in range(2, args.nodes + 1):
            r = cli("join", tok, "--data-dir", str(root / f"n{i}"))
            if r.returncode != 0:
                raise SystemExit(f"join failed: {r.stderr}")
            nodes.append(Daemon(root, f"n{i}", p2p_host=f"127.0.0.{i + 1}", prefix=prefix).start())
        def all_alive(d: Daemon) -> bool:
            return bool(sum(n["state"] == "alive" for n in d.json("nodes")["nodes"]) == args.nodes)

        for d in nodes:
            wait_sync(lambda: all_alive(d), timeout_s=60, interval_s=0.5)  # noqa: B023  # called at once
        procs = [psutil.Process(d.pid) for d in nodes]
        c0, t0 = _cpu(procs), time.monotonic()
        time.sleep(args.window)  # the measurement window itself (a benchmark, not a test)
        c1, t1 = _cpu(procs), time.monotonic()
        alive_after = [sum(n["state"] == "alive" for n in d.json("nodes")["nodes"]) for d in nodes]
        wall = t1 - t0
        pct = (c1 - c0) / wall * 100
        return {"nodes": args.nodes, "window_s": round(wall, 1), "profile": "lan (probe 0.5 s)",
                "services": "membership only" if args.only_membership else "all default services",
                "cpu_pct_of_one_core_all_daemons": round(pct, 2),
                "cpu_pct_per_daemon": round(pct / args.nodes, 3), "target_pct": 10.0,
                "all_alive_after": all(a == args.nodes for a in alive_after)}
    finally:
        for d in nodes:
            d.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--only-membership", action="store_true", help="run daemons with the membership service only")
    print(json.dumps(main(ap.parse_args()), indent=2))
