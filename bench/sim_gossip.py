"""Gossip convergence and bandwidth in the simulator (a model of Serf's convergence simulator).

Prints, for N = 100 and 1,000 nodes with gossip every 200 ms to 3 peers (ReplicationConfig.lan()):
time until one write is held by 100% of nodes (median and worst of several writes), with 0% and
30% packet loss; then per-node gossip bandwidth under a steady write load. Baseline: Serf's
simulator figures (1.2 s at N=100, 1.6 s at N=1,000). Signatures use a keyed-hash stand-in here
(bench/merge.py measures real ed25519). Run: .venv/bin/python bench/sim_gossip.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from federation.replication import (
    AnyMember,
    Changed,
    MemoryStore,
    ReplicationConfig,
    Replicator,
    SelfKeyed,
    TableRules,
)
from federation.replication.wire import encode
from federation.sansio import NodeId
from tests.sim.net import SimNet

SERF = {100: 1.2, 1000: 1.6}
TARGET = {(100, 0.0): 1.2, (1000, 0.0): 1.6, (1000, 0.3): 2.0}


class Net(SimNet):
    def do(self, nid: NodeId, effects: list[Any]) -> None:
        self._apply(nid, effects)


def _signer(key: bytes) -> Callable[[bytes], bytes]:
    return lambda m: hashlib.blake2b(m, key=key, digest_size=64).digest()


def build(n: int, loss: float, seed: int) -> tuple[Net, dict[NodeId, Replicator]]:
    cfg = ReplicationConfig.lan()
    ids = [NodeId(f"n{i:04d}") for i in range(n)]
    secrets = {i: hashlib.sha256(i.encode()).digest() for i in ids}

    def verify(origin: NodeId, msg: bytes, sig: bytes) -> bool:
        k = secrets.get(origin)
        return k is not None and hashlib.blake2b(msg, key=k, digest_size=64).digest() == sig

    rules = TableRules({"reg": AnyMember(), "nodes": SelfKeyed()})
    net = Net(seed, loss=loss, delay_s=(0.0005, 0.005))  # LAN one-way delays
    reps: dict[NodeId, Replicator] = {}
    rng = random.Random(seed)
    for i in ids:
        key = secrets[i]
        reps[i] = Replicator(
            i,
            cfg,
            MemoryStore(cfg.buckets),
            _signer(key),
            verify,
            rules,
            random.Random(rng.random()),
            wall_offset_s=1e6,
        )
        net.add(i, reps[i])
    for i in ids:
        net.do(i, reps[i].set_peers(net.now, ids))
    return net, reps


def convergence(n: int, loss: float, writes: int, seed: int) -> list[float]:
    net, reps = build(n, loss, seed)
    net.run_for(6.0)  # past the joiners' first anti-entropy round
    got: dict[str, dict[NodeId, float]] = {}

    def obs(now: float, nid: NodeId, eff: Any) -> None:
        if isinstance(eff, Changed):
            got.setdefault(eff.key, {}).setdefault(nid, now)

    net.observers.append(obs)
    rng = random.Random(seed + 1)
    times = []
    ids = list(reps)
    for w in range(writes):
        key = f"w{w}"
        origin = rng.choice(ids)
        net.run_for(rng.uniform(0, 0.2))  # a random phase against the gossip timers
        t0 = net.now
        effects, _ = reps[origin].write(t0, "reg", key, b"x" * 64)
        net.do(origin, list(effects))
        net.run_until(lambda key=key: len(got.get(key, ())) == n, max_s=30)  # type: ignore[misc]  # default-bound loop var
        times.append(max(got[key].values()) - t0)
        net.run_for(1.0)
    return times


def bandwidth(n: int, rate_per_s: float, seconds: float, seed: int) -> tuple[float, float, float]:
    """Mean and max bytes/s sent per node, and the gossip-only mean, under a steady write load."""
    net, reps = build(n, 0.0, seed)
    net.run_for(6.0)
    sent: dict[NodeId, int] = dict.fromkeys(reps, 0)
    push: dict[NodeId, int] = dict.fromkeys(reps, 0)
    orig_send = net._send

    def spy(src: NodeId, dst: NodeId, msg: Any) -> None:
        size = len(encode(msg))
        sent[src] += size
        if msg.kind == "repl.push":
            push[src] += size
        orig_send(src, dst, msg)

    net._send = spy  # type: ignore[method-assign]  # bench-only tap on the simulated wire
    rng = random.Random(seed)
    ids = list(reps)
    t_end = net.now + seconds
    w = 0
    while net.now < t_end:
        net.run_for(rng.expovariate(rate_per_s))
        origin = rng.choice(ids)
        effects, _ = reps[origin].write(net.now, "reg", f"load{w % 500}", rng.randbytes(200))
        net.do(origin, list(effects))
        w += 1
    per_node = [b / seconds for b in sent.values()]
    return statistics.mean(per_node), max(per_node), statistics.mean(b / seconds for b in push.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer writes per setting")
    args = ap.parse_args()
    writes = 3 if args.quick else 7
    t_start = time.perf_counter()
    print("# gossip convergence: time until a write is held by 100% of nodes (virtual s)")
    print("# gossip_interval=0.2 s fanout=3 retransmit_mult=4 ae_interval=5 s; one-way delay 0.5-5 ms")
    print(f"{'N':>6} {'loss':>5} {'median_s':>9} {'worst_s':>8} {'target_s':>9} {'serf_s':>7} {'wall_s':>7}")
    for n, loss in [(100, 0.0), (100, 0.3), (1000, 0.0), (1000, 0.3)]:
        t = time.perf_counter()
        times = convergence(n, loss, writes, seed=n + int(loss * 10))
        target = TARGET.get((n, loss))
        print(
            f"{n:>6} {loss:>5.0%} {statistics.median(times):>9.2f} {max(times):>8.2f} "
            f"{target if target else '-':>9} {SERF.get(n, '-') if loss == 0 else '-':>7} "
            f"{time.perf_counter() - t:>7.1f}"
        )
    print("# bandwidth per node under load: 20 writes/s network-wide, 200 B values, 10 virtual s")
    print(f"{'N':>6} {'mean_KB/s':>10} {'max_KB/s':>9} {'push_KB/s':>10} {'limit':>6} {'wall_s':>7}")
    for n, rate in [(100, 20.0), (1000, 20.0), (100, 100.0)]:
        t = time.perf_counter()
        mean, worst, pushed = bandwidth(n, rate, 10.0, seed=7)
        note = "" if rate == 20.0 else f"  (overload: {rate:.0f} writes/s; anti-entropy carries the excess)"
        print(
            f"{n:>6} {mean / 1e3:>10.2f} {worst / 1e3:>9.2f} {pushed / 1e3:>10.2f} {'25':>6} "
            f"{time.perf_counter() - t:>7.1f}{note}"
        )
    print(f"# total wall time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
