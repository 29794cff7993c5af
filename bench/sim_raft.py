"""Raft core benchmarks: failover time and commit hops in virtual time, core throughput in wall time.

Run: .venv/bin/python bench/sim_raft.py [--runs 200] [--seconds 2]
1. Leader failover with RaftConfig.lan(): crash the leader, measure virtual time until a new
   leader has committed an entry of its own term (p50/p99/max), 3 and 5 voters, LAN delays.
2. Commit latency in message hops: fixed one-way delay d, idle cluster; time from propose to
   the leader's Committed (and to every follower applying it), divided by d.
3. Core throughput: 3 voters in one process, messages handed over directly (no network, no
   timers), commands/s through propose_batch at several batch sizes; the ratio is against
   batch size 1 measured in the same run. Flushes per command show fsync batching.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federation.consensus import (  # after the sys.path line: a plain script
    Committed,
    InMemoryRaftStorage,
    Raft,
    RaftConfig,
    Role,
    bootstrap,
)
from federation.consensus.lmdb_log import LmdbRaftStorage
from federation.sansio import NodeId, Send
from storage import Store
from tests.sim.raft_history import ListStateMachine, RaftCluster

LAN_DELAY_S = (0.0002, 0.001)  # one-way LAN latency range (0.2-1 ms)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def failover(runs: int, n: int) -> list[float]:
    return [failover_once(seed, n) for seed in range(runs)]


def failover_once(seed: int, n: int) -> float:
    """Virtual seconds from crashing a stable leader to a new leader committing in its own term."""
    c = RaftCluster(seed, [f"n{i}" for i in range(n)], RaftConfig.lan(), delay_s=LAN_DELAY_S)
    c.run_until(lambda: c.committing_leader() is not None, max_s=30)
    c.run(random.Random(seed).uniform(0.5, 2.0), propose_every_s=0.05)
    old = c.committing_leader()
    assert old is not None
    c.crash(old)
    crashed_at = c.net.now

    def new_leader_commits() -> bool:
        lead = c.committing_leader()
        return lead is not None and lead != old

    c.run_until(new_leader_commits, max_s=30)
    assert not c.history.violations
    return c.net.now - crashed_at


def commit_hops(n: int, d: float = 0.001) -> tuple[float, float]:
    ids = [f"n{i}" for i in range(n)]
    c = RaftCluster(1, ids, RaftConfig.lan(), delay_s=(d, d))
    c.run_until(lambda: c.committing_leader() is not None, max_s=30)
    c.run(0.35)  # idle, mid-way between heartbeats... then propose
    lead = c.committing_leader()
    assert lead is not None
    t0 = c.net.now
    index = c.propose(at=lead)
    assert isinstance(index, int)
    c.run_until(lambda: index in c.history.acked, max_s=5)
    at_leader = (c.net.now - t0) / d
    c.run_until(lambda: all(c.nodes[x].raft.status().last_applied >= index for x in c.ids), max_s=5)
    everywhere = (c.net.now - t0) / d
    return at_leader, everywhere


def throughput(
    batch: int, seconds: float, *, per_call: int = 0, lmdb_dir: Path | None = None
) -> tuple[float, float]:
    """Commands/s committed at the leader (3 voters, direct delivery) and flushes per command.

    Each round proposes `per_call` batches of `batch` commands, then delivers every message
    until the cluster is quiet; per_call=0 means "enough batches for ~512 commands per round".
    With `lmdb_dir`, each node keeps its log in its own real LMDB store (one fsync per flush).
    """
    cfg = RaftConfig.lan()
    ids = [NodeId("a"), NodeId("b"), NodeId("c")]
    stores = [Store.open(lmdb_dir / i) for i in ids] if lmdb_dir is not None else []
    storages: dict[NodeId, Any] = {
        i: LmdbRaftStorage(stores[k], "bench") if stores else InMemoryRaftStorage() for k, i in enumerate(ids)
    }
    nodes = {}
    for i in ids:
        bootstrap(storages[i], ids)
        nodes[i] = Raft(i, cfg, storages[i], ListStateMachine(), random.Random(i))
    now = 0.0
    wire: list[tuple[NodeId, NodeId, Any]] = []
    committed = 0

    def take(src: NodeId, effects: list[Any]) -> None:
        nonlocal committed
        for e in effects:
            if isinstance(e, Send):
                wire.append((src, e.to, e.msg))
            elif isinstance(e, Committed) and src == "a":
                committed += 1

    def pump() -> None:
        while wire:
            src, dst, msg = wire.pop(0)
            take(dst, nodes[dst].on_message(now, src, msg))

    for i in ids:
        take(i, nodes[i].start(now))
    now = 2.0
    take(ids[0], nodes[ids[0]].on_timer(now, "raft.election"))
    pump()
    assert nodes[ids[0]].role is Role.LEADER
    cmds = [b"x" * 64] * batch
    committed = 0
    flushes0 = sum(s.flushes for s in storages.values())
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(per_call or max(1, 512 // batch)):
            effects, r = nodes[ids[0]].propose_batch(now, cmds)
            assert isinstance(r, int), r
            take(ids[0], effects)
        pump()
        now += 1e-5  # virtual time crawls: no heartbeat or election timer is due
    elapsed = time.perf_counter() - start
    flushes = sum(s.flushes for s in storages.values()) - flushes0
    for store in stores:
        store.close()
    return committed / elapsed, flushes / max(1, committed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    lan = RaftConfig.lan()
    print(
        f"profile lan: election timeout {lan.election_timeout_min_s}-{lan.election_timeout_max_s} s, "
        f"heartbeat {lan.heartbeat_interval_s} s, one-way delay {LAN_DELAY_S[0] * 1e3}-{LAN_DELAY_S[1] * 1e3} ms"
    )
    for n in (3, 5):
        t0 = time.perf_counter()
        xs = failover(args.runs, n)
        print(
            f"failover {n} voters ({args.runs} runs, virtual s): p50 {pct(xs, 50):.3f}  p99 {pct(xs, 99):.3f}  "
            f"max {max(xs):.3f}  mean {statistics.mean(xs):.3f}  "
            f"p99/election_timeout_max {pct(xs, 99) / lan.election_timeout_max_s:.2f}  "
            f"[{time.perf_counter() - t0:.1f} s wall]"
        )
    for n in (3, 5):
        at_leader, everywhere = commit_hops(n)
        print(
            f"commit latency {n} voters: {at_leader:.1f} hops to the leader's commit, {everywhere:.1f} hops to all applied"
        )
    base, base_f = throughput(1, args.seconds, per_call=1)
    fsync_s = 1 / 4000  # this disk: a per-entry fsync caps out near 4,000/s (issue 8)

    def with_fsync(tp: float, f: float) -> float:
        return 1 / (1 / tp + f * fsync_s / 3)  # flushes are counted over 3 nodes that fsync in parallel

    print(
        f"throughput 1 cmd per round trip: {base:10,.0f} cmd/s  flushes/cmd {base_f:.3f}  "
        f"with 250us fsync {with_fsync(base, base_f):9,.0f} cmd/s  (baseline)"
    )
    for b in (1, 16, 64, 256):
        tp, f = throughput(b, args.seconds)
        print(
            f"throughput batch {b:4d}, pipelined: {tp:10,.0f} cmd/s  flushes/cmd {f:.3f}  "
            f"with 250us fsync {with_fsync(tp, f):9,.0f} cmd/s  x{with_fsync(tp, f) / with_fsync(base, base_f):.1f}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        lbase, _ = throughput(1, args.seconds, per_call=1, lmdb_dir=Path(tmp) / "base")
        print(f"real LMDB (3 stores, this disk), 1 cmd per round trip: {lbase:9,.0f} cmd/s (baseline)")
        for b in (1, 64, 256):
            tp, f = throughput(b, args.seconds, lmdb_dir=Path(tmp) / f"b{b}")
            print(
                f"real LMDB, batch {b:4d}, pipelined: {tp:9,.0f} cmd/s  flushes/cmd {f:.3f}  x{tp / lbase:.1f}"
            )


if __name__ == "__main__":
    main()
