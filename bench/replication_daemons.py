"""Write-to-visible-everywhere latency between real daemons (default settings: lan profile).

Starts N `aiosd run` processes on 127.0.0.2.. (joined with one token), opens a `/v1/watch`
stream on every node, then writes records one at a time on random nodes and measures, per
write, the time until the last node's watch stream delivered it. Target: p99 <= 1 s at N=10.
Run: .venv/bin/python bench/replication_daemons.py [--nodes 10] [--writes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import statistics
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from aiosd.client import Client  # after sys.path
from tests.daemons import Daemon, start_network


def start(root: pathlib.Path, n: int) -> list[Daemon]:
    return start_network(root, n)


async def measure(nodes: list[Daemon], writes: int, gap_s: float) -> list[float]:
    seen: dict[str, list[float]] = {}
    t_write: dict[str, float] = {}
    ready = asyncio.Event()
    opened = 0

    async def watch(d: Daemon) -> None:
        nonlocal opened
        conn = aiohttp.UnixConnector(path=str(d.socket))
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as s, \
                s.get("http://aiosd/v1/watch", params={"table": "tasks"}) as resp:
            await resp.content.readline()
            opened += 1
            if opened == len(nodes):
                ready.set()
            async for raw in resp.content:
                line = raw.decode()
                if line.startswith("data: "):
                    key = json.loads(line[6:])["key"]
                    seen.setdefault(key, []).append(time.monotonic())

    watchers = [asyncio.create_task(watch(d)) for d in nodes]
    await asyncio.wait_for(ready.wait(), 30)
    rng = random.Random(7)
    clients = [Client(d.socket) for d in nodes]
    for c in clients:
        await c.__aenter__()
    lat: list[float] = []
    try:
        for i in range(writes):
            key = f"bench-{i}"
            c = rng.choice(clients)
            t_write[key] = time.monotonic()
            await c.put(f"/v1/registry/tasks/{key}", {"i": i})
            await asyncio.sleep(gap_s)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(seen.get(k, [])) < len(nodes) for k in t_write):
            await asyncio.sleep(0.1)
        for k, t0 in t_write.items():
            arr = seen.get(k, [])
            lat.append(max(arr) - t0 if len(arr) == len(nodes) else float("inf"))
        totals: dict[str, float] = {}
        for c in clients:
            st = (await c.get("/v1/registry/_digests"))["stats"]
            for k, v in st.items():
                if isinstance(v, int | float):
                    totals[k] = totals.get(k, 0) + v
                elif isinstance(v, dict):
                    for r, n in v.items():
                        totals[f"{k}.{r}"] = totals.get(f"{k}.{r}", 0) + n
        print("# replication counters summed over nodes:", json.dumps(totals, sort_keys=True))
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
        for w in watchers:
            w.cancel()
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--writes", type=int, default=100)
    ap.add_argument("--gap", type=float, default=0.1, help="seconds between writes")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiosd-bench") as tmp:
        t0 = time.monotonic()
        nodes = start(pathlib.Path(tmp), a.nodes)
        print(f"# {a.nodes} daemons up and joined in {time.monotonic() - t0:.1f}s; lan settings "
              "(gossip 200 ms, fanout 3)")
        try:
            raw = asyncio.run(measure(nodes, a.writes, a.gap))
            lat = sorted(raw)
            worst = sorted(range(len(raw)), key=lambda i: -raw[i])[:3]
            print("# slowest writes (index: ms):", ", ".join(f"{i}: {raw[i] * 1000:.0f}" for i in worst))
        finally:
            for d in nodes:
                d.stop()
    lost = sum(x == float("inf") for x in lat)
    ok = [x for x in lat if x != float("inf")]
    p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))]
    print(f"write-to-visible-everywhere over {len(lat)} writes: p50 {p(0.5) * 1000:.0f} ms  "
          f"p90 {p(0.9) * 1000:.0f} ms  p99 {p(0.99) * 1000:.0f} ms  max {ok[-1] * 1000:.0f} ms  "
          f"mean {statistics.mean(ok) * 1000:.0f} ms  not seen everywhere: {lost}")


if __name__ == "__main__":
    main()
