"""Chaos on real daemons in network namespaces: many seeded schedules, violations and recovery.

Run (root, iproute2 + nftables; faketime for clock skew):
    .venv/bin/python bench/chaos.py [--schedules 50] [--first-seed 1000] [--faults 3] [--nodes 5]
                                    [--max-minutes 40] [--break ack-before-durable]
One network of N daemons (tests/chaos/net.py) runs every schedule in turn (seeds first-seed..);
each schedule injects `--faults` faults one after another while the registry, controller and
inference workloads run, heals them, then runs every checker (tests/chaos/checkers.py). Prints
one JSON line per schedule, then faults by kind, violations, and the recovery figures
(p50 / max) against today's loopback numbers: partition healed -> registries equal (<= 1 s with
gossip, <= 5 s with one anti-entropy round), leader isolated -> new leader committing (<= 2 s),
node killed -> its instances answering elsewhere (<= 15 s). Bounded by --max-minutes.
A failing seed replays alone: AIOSD_TEST_CHAOS_SEED=<seed> .venv/bin/python bench/chaos.py --schedules 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.checkers import Violation, proc_usage
from tests.chaos.faults import Kind, seed_from_env  # after the sys.path line: a plain script
from tests.chaos.net import ChaosNet, why_not
from tests.chaos.run import KNOWN_BUGS_ENV, RunResult, dumps, run_schedule, setup_echo

TARGETS = {"heal_to_equal": 5.0, "leader_to_commit": 2.0, "kill_to_answering": 15.0}


def _fig(xs: list[float | None]) -> str:
    got = sorted(x for x in xs if x is not None)
    missed = len(xs) - len(got)
    if not got:
        return f"n={len(xs)} none reached"
    return (f"n={len(xs)} p50 {statistics.median(got):.2f}s max {got[-1]:.2f}s"
            + (f", {missed} not reached within the fault" if missed else ""))


def report(results: list[RunResult], wall_s: float, ready_s: float) -> None:
    kinds: Counter[str] = Counter()
    rec: dict[str, list[float | None]] = {}
    for r in results:
        kinds.update(r.kinds)
        for k, v in r.recovery.items():
            rec.setdefault(k, []).extend(v)
    bad = [r for r in results if r.violations]
    print(f"\n{len(results)} schedules in {wall_s / 60:.1f} min (network ready in {ready_s:.1f}s)")
    print("faults by kind:", dict(sorted(kinds.items())))
    print(f"violations: {sum(len(r.violations) for r in results)} in {len(bad)} schedules")
    for r in bad:
        for bad_v in r.violations:
            print(f"  seed {r.seed}: {bad_v}")
    for k, target in TARGETS.items():
        print(f"{k}: {_fig(rec.get(k, []))} (target <= {target:g}s)")
    infer: Counter[str] = Counter()
    for r in results:
        infer.update(r.inference)
    print("inference outcomes:", dict(infer))


def _usage(net: ChaosNet) -> dict[str, tuple[float, int]]:
    return {x.name: proc_usage(x.daemon.pid) for x in net.nodes if x.daemon.proc and x.daemon.proc.poll() is None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedules", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--faults", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--max-minutes", type=float, default=40.0)
    ap.add_argument("--kinds", default="", help="comma-separated fault kinds (default: all)")
    ap.add_argument("--known-bugs", choices=("avoid", "hit"), default="avoid",
                    help="hit: let schedules run into known daemon bugs (see tests/chaos/run.py)")
    ap.add_argument("--break", dest="brk", default="", help="AIOSD_TEST_BREAK for every daemon (a broken build)")
    args = ap.parse_args()
    if why := why_not():
        print(f"skipped: {why}")
        return 0
    first = seed_from_env(args.first_seed)
    os.environ[KNOWN_BUGS_ENV] = args.known_bugs
    print(f"known bugs: {args.known_bugs}")
    kinds = tuple(Kind(k) for k in args.kinds.split(",")) if args.kinds else tuple(Kind)
    env = {"AIOSD_TEST_BREAK": args.brk} if args.brk else {}
    t0 = time.monotonic()
    results: list[RunResult] = []
    with ChaosNet(args.nodes, env=env) as net:
        setup_echo(net)
        first_usage = _usage(net)
        for seed in range(first, first + args.schedules):
            if time.monotonic() - t0 > args.max_minutes * 60:
                print(f"stopped at the {args.max_minutes:g} min bound")
                break
            try:
                res = asyncio.run(run_schedule(net, seed, count=args.faults, kinds=kinds))
            except (AssertionError, RuntimeError, OSError) as e:  # a daemon that does not come back: reported
                results.append(RunResult(seed, [], Counter(), [Violation("harness", f"{type(e).__name__}: {e}")]))
                print(f"seed {seed}: the run stopped: {e}", flush=True)
                break
            results.append(res)
            print(dumps(res), flush=True)
        ready = net.ready_s
        print("daemon RSS MiB / open fds, after setup -> after the run (restarted daemons are new processes):")
        last = _usage(net)
        for name, (rss, fds) in first_usage.items():
            print(f"  {name}: {rss:.0f} / {fds} -> {last.get(name, (0.0, 0))[0]:.0f} / {last.get(name, (0.0, 0))[1]}")
    report(results, time.monotonic() - t0, ready)
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
