"""SWIM membership in the deterministic simulator, with memberlist's LAN defaults.

Prints one table: crash-to-dead-everywhere time at N=10 and N=100 beside memberlist's published
figures (6 s / 10 s), false "dead" verdicts at 10% loss and for a 5 s event-loop stall, recovery after
half the nodes restart at once, and per-node message and byte rates (bytes = msgpack-encoded size).
Virtual time, so the numbers do not depend on this machine's load; wall time is printed too.

Usage: .venv/bin/python bench/sim_membership.py [--quick] [--seeds N]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation.membership import MemberState, SwimConfig
from tests.sim.membership_harness import SwimCluster

DEAD, SUSPECT = MemberState.DEAD, MemberState.SUSPECT
LAN = SwimConfig.lan()
PUBLISHED_DETECT_S = {10: 6.0, 100: 10.0}  # memberlist / Consul LAN figures


@dataclass
class Row:
    metric: str
    value: str
    reference: str = ""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def detect(n: int, seeds: int) -> tuple[list[float], int]:
    times: list[float] = []
    false_dead = 0
    for seed in range(seeds):
        c = SwimCluster(n=n, seed=seed, seeds_per_node=3)
        c.start()
        c.net.run_until(c.converged, max_s=120)
        c.net.run_for(5.0 + c.rng.uniform(0, 1))
        victim = c.ids[seed % n]
        since = c.net.now
        c.crash(victim)
        others = [x for x in c.ids if x != victim]
        c.net.run_until(functools.partial(c.all_see, [victim], DEAD, others), max_s=120)
        times.append(c.time_all_saw(victim, DEAD, since, others))
        false_dead += sum(1 for v in c.verdicts if v.state == DEAD and v.node != victim)
    return times, false_dead


def loss(n: int, seeds: int, span_s: float) -> tuple[int, int]:
    false_dead = suspects = 0
    for seed in range(seeds):
        c = SwimCluster(n=n, seed=1000 + seed, loss=0.10)
        c.start()
        c.net.run_for(span_s)
        false_dead += sum(1 for v in c.verdicts if v.state == DEAD)
        suspects += sum(1 for v in c.verdicts if v.state == SUSPECT)
    return false_dead, suspects


def stall(n: int, seeds: int, stall_s: float) -> tuple[int, int, int]:
    false_dead = suspected = refutes = 0
    for seed in range(seeds):
        c = SwimCluster(n=n, seed=2000 + seed)
        c.start()
        c.net.run_until(c.converged, max_s=120)
        c.net.run_for(c.rng.uniform(1, 3))
        victim = c.ids[seed % n]
        c.net.stall(victim, stall_s)
        c.net.run_for(stall_s + 15)
        false_dead += sum(1 for v in c.verdicts if v.state == DEAD)
        suspected += any(v.state == SUSPECT and v.node == victim for v in c.verdicts)
        refutes += c.nodes[victim].swim.counters.refutations
    return false_dead, suspected, refutes


def restart_half(n: int, seeds: int, down_s: float) -> tuple[list[float], int]:
    times: list[float] = []
    stuck = 0
    for seed in range(seeds):
        c = SwimCluster(n=n, seed=3000 + seed)
        c.start()
        c.net.run_until(c.converged, max_s=120)
        for nid in c.ids[: n // 2]:
            c.crash(nid)
        c.net.run_for(down_s)
        for nid in c.ids[: n // 2]:
            c.start_node(nid)
        times.append(c.net.run_until(c.converged, max_s=120))
        c.net.run_for(30)
        stuck += not c.converged_now()
    return times, stuck


def traffic(n: int, span_s: float) -> tuple[float, float]:
    c = SwimCluster(n=n, seed=4000, measure_bytes=True)
    c.start()
    c.net.run_until(c.converged, max_s=120)
    c.net.run_for(LAN.push_pull_interval_s)  # past the join burst
    sent0, bytes0 = c.net.stats.sent, c.net.stats.bytes_sent
    c.net.run_for(span_s)
    return (c.net.stats.sent - sent0) / n / span_s, (c.net.stats.bytes_sent - bytes0) / n / span_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds (about 20 s)")
    ap.add_argument("--seeds", type=int, default=0, help="override the seed count of every scenario")
    args = ap.parse_args()
    k = args.seeds or (5 if args.quick else 20)
    wall = time.perf_counter()
    rows: list[Row] = []
    for n, seeds in ((10, k), (100, max(2, k // 4))):
        t, fd = detect(n, seeds)
        ref = PUBLISHED_DETECT_S[n]
        rows.append(
            Row(
                f"crash -> dead on all, N={n} ({seeds} runs)",
                f"median {statistics.median(t):.2f} s, p95 {pct(t, 95):.2f} s, max {max(t):.2f} s",
                f"memberlist {ref:.0f} s (median/ref {statistics.median(t) / ref:.2f})",
            )
        )
        rows.append(Row(f"  false dead during those runs, N={n}", str(fd), "0"))
    fd, sus = loss(10, k, 120.0)
    rows.append(Row(f"false dead at 10% loss, N=10 ({k} x 120 s)", f"{fd} (suspect verdicts: {sus})", "0"))
    fd, sus = loss(100, max(1, k // 10), 60.0)
    rows.append(
        Row(
            f"false dead at 10% loss, N=100 ({max(1, k // 10)} x 60 s)",
            f"{fd} (suspect verdicts: {sus})",
            "0",
        )
    )
    fd, suspected, refutes = stall(10, k, 5.0)
    rows.append(
        Row(
            f"5 s stall, N=10 ({k} runs)",
            f"{fd} dead, suspected in {suspected}, {refutes} refutations",
            "0 dead",
        )
    )
    fd, suspected, refutes = stall(100, max(2, k // 4), 5.0)
    rows.append(
        Row(f"5 s stall, N=100 ({max(2, k // 4)} runs)", f"{fd} dead, suspected in {suspected}", "0 dead")
    )
    for down_s in (0.0, 40.0):
        t, stuck = restart_half(10, k, down_s)
        rows.append(
            Row(
                f"half of N=10 restart at once, down {down_s:.0f} s ({k} runs)",
                f"all alive {statistics.median(t):.2f} s after (max {max(t):.2f} s); stuck dead {stuck}",
                "0 stuck",
            )
        )
    for n in (10, 100):
        msgs, nbytes = traffic(n, 60.0)
        rows.append(
            Row(
                f"traffic per node, N={n}, steady state",
                f"{msgs:.1f} msg/s, {nbytes / 1000:.2f} kB/s sent",
                "",
            )
        )
    width = max(len(r.metric) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    print(
        f"SWIM simulator, memberlist LAN defaults (probe {LAN.probe_interval_s} s, timeout "
        f"{LAN.probe_timeout_s} s, k={LAN.indirect_checks}, gossip {LAN.gossip_interval_s} s x "
        f"{LAN.gossip_nodes}, suspicion {LAN.suspicion_mult}*log10(N), max x{LAN.suspicion_max_timeout_mult})"
    )
    print(f"{'metric':<{width}}  {'measured':<{vwidth}}  reference")
    for r in rows:
        print(f"{r.metric:<{width}}  {r.value:<{vwidth}}  {r.reference}")
    print(f"wall time {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
