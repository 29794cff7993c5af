"""vDAG data plane over 3 real daemons (process driver) vs a client that calls the same block
instances one after another itself, same run.

1. Three daemons joined with a token; blocks stage-a/b/c and join-3 (examples/vdag-*) placed by the
   cluster's controller (spread: one block per node); the linear and fan-out vDAGs of
   examples/vdag-pipeline applied. Entry: the node that runs stage-a.
2. Throughput, 1 KB text, `--concurrency` tasks in flight: POST /v1/infer/vdag/text-pipeline on the
   entry vs the baseline (POST /v1/infer/block/stage-a on its node, then stage-b on its node, then
   stage-c, each with the previous output). Interleaved rounds; the best round of each is reported.
3. Latency p50/p99, one task at a time: linear vDAG, baseline, fan-out 1→3→1.
4. 1 MiB through the 3 stages (by reference at every hop), vDAG vs baseline: as JSON text in `data`
   (JSON in and out), and as a file (msgpack in and out, `Accept: application/msgpack`: the bytes are
   never text). The stage block passes files through unchanged.

Usage: PYTHONPATH=. .venv/bin/python bench/vdag.py [--tasks 2000] [--concurrency 32] [--samples 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.daemons import Daemon
from tests.instances import kill_process_instances
from tests.integration.test_controller_daemons import (
    healthy_here,
    node_id,
    placements,
    start_cluster,
)
from tests.waiting import wait_sync

EX = ROOT / "examples"
BLOCKS = ("stage-a", "stage-b", "stage-c", "join-3")
LINEAR, FAN = "text-pipeline:1.0-stable", "text-fan:1.0-stable"
MP = "application/msgpack"


def setup(root: Path, daemons: list[Daemon]) -> dict[str, Daemon]:
    nodes = start_cluster(root, daemons, 3)
    admin = nodes[0]
    for comp in ("vdag-stage", "vdag-join"):
        admin.cli("apply", "-f", str(EX / comp / "component.json"))
    for b in BLOCKS:
        r = admin.cli("apply", "-f", str(EX / "vdag-pipeline/blocks" / f"{b}.json"), "--cluster", timeout_s=60)
        assert r.returncode == 0, r.stderr
    by_id = {node_id(d): d for d in nodes}
    where = {}
    for b in BLOCKS:
        wait_sync(lambda b=b: len(placements(admin, b)) == 1, timeout_s=10)  # type: ignore[misc]
        ((iid, nid),) = placements(admin, b).items()
        wait_sync(lambda b=b, iid=iid, nid=nid: iid in healthy_here(by_id[nid], b),  # type: ignore[misc]
                  timeout_s=60, interval_s=0.25)
        where[b] = by_id[nid]
    for f in ("vdag-linear.json", "vdag-fan.json"):
        r = admin.cli("apply", "-f", str(EX / "vdag-pipeline" / f))
        assert r.returncode == 0, r.stderr
    for uri in (LINEAR, FAN):  # the records replicate to every node (entry and stages) a moment after the apply
        for d in nodes:
            wait_sync(lambda uri=uri, d=d: d.cli("get", "vdags", uri).returncode == 0,  # type: ignore[misc]
                      timeout_s=30, interval_s=0.25)
    print("placement: " + ", ".join(f"{b}@{node_id(d)}" for b, d in where.items()))
    return where


class Clients:
    def __init__(self, where: dict[str, Daemon]) -> None:
        self.where = where
        self.s: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> Self:
        for b, d in self.where.items():
            self.s[b] = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(d.socket), limit=256))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in self.s.values():
            await s.close()

    async def post(self, b: str, path: str, body: Any) -> Any:
        async with self.s[b].post("http://aiosd" + path, json=body) as r:
            out = await r.json()
            if r.status != 200:
                raise SystemExit(f"{path}: HTTP {r.status}: {out}")
            return out

    async def post_mp(self, b: str, path: str, packet: dict[str, Any]) -> Any:
        async with self.s[b].post("http://aiosd" + path, data=msgpack.packb(packet, use_bin_type=True),
                                  headers={"Content-Type": MP, "Accept": MP}) as r:
            body = await r.read()
            if r.status != 200:
                raise SystemExit(f"{path}: HTTP {r.status}: {body[:300]!r}")
            return msgpack.unpackb(body, raw=False)

    async def vdag_file(self, blob: bytes) -> bytes:
        """`blob` as a file through the linear vDAG, msgpack both ways (files stay bytes)."""
        out = await self.post_mp("stage-a", f"/v1/infer/vdag/{LINEAR}",
                                 {"data": '{"text": "f"}', "files": [{"metadata": "", "file_data": blob}]})
        return bytes(out["packets"][0]["files"][0]["file_data"])

    async def baseline_file(self, blob: bytes) -> bytes:
        packet: dict[str, Any] = {"data": '{"text": "f"}', "files": [{"metadata": "", "file_data": blob}]}
        for b in ("stage-a", "stage-b", "stage-c"):
            out = await self.post_mp(b, f"/v1/infer/block/{b}", packet)
            p = out["packets"][0]
            packet = {"data": p["data"], "files": p["files"]}
        return bytes(packet["files"][0]["file_data"])

    async def vdag(self, uri: str, text: str) -> str:
        out = await self.post("stage-a", f"/v1/infer/vdag/{uri}", {"data": {"text": text}})
        return str(out["outputs"][0]["text"])

    async def baseline(self, text: str) -> str:
        data: Any = {"text": text}
        for b in ("stage-a", "stage-b", "stage-c"):
            out = await self.post(b, f"/v1/infer/block/{b}", {"data": data})
            data = out["outputs"][0]
        return str(data["text"])


async def throughput(fn: Callable[[], Awaitable[object]], n: int, conc: int) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await fn()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return n / (time.perf_counter() - t0)


async def latency(fns: list[Callable[[], Awaitable[object]]], n: int) -> list[tuple[float, float]]:
    """p50/p99 ms of each of `fns`, one call at a time, the calls interleaved (a, b, c, a, b, c...) so
    that a shared machine's changing load falls on all of them alike."""
    lat: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            await fn()
            lat[i].append(time.perf_counter() - t0)
    out = []
    for xs in lat:
        xs.sort()
        out.append((statistics.median(xs) * 1e3, xs[max(0, int(0.99 * len(xs)) - 1)] * 1e3))
    return out


async def run(where: dict[str, Daemon], tasks: int, conc: int, samples: int) -> None:
    text = "x" * 1000
    async with Clients(where) as c:
        assert await c.vdag(LINEAR, "hi") == "hi-a-b-c" and await c.baseline("hi") == "hi-a-b-c"
        for _ in range(50):  # warm both paths
            await c.vdag(LINEAR, text)
            await c.baseline(text)
            await c.vdag(FAN, text)
        best = {"vdag": 0.0, "baseline": 0.0}
        for _ in range(2):
            best["baseline"] = max(best["baseline"], await throughput(lambda: c.baseline(text), tasks, conc))
            best["vdag"] = max(best["vdag"], await throughput(lambda: c.vdag(LINEAR, text), tasks, conc))
        print(f"throughput, 1 KB, {conc} in flight, {tasks} tasks/round, best of 2 rounds:")
        print(f"  vDAG 3-stage linear   {best['vdag']:8.0f} tasks/s")
        print(f"  baseline (client x3)  {best['baseline']:8.0f} tasks/s")
        print(f"  ratio vDAG/baseline   {best['vdag'] / best['baseline']:8.2f}x   (target >= 0.6x, >= 1500/s)")
        lin, base, fan = await latency([lambda: c.vdag(LINEAR, text), lambda: c.baseline(text),
                                        lambda: c.vdag(FAN, text)], samples)
        print(f"latency, one at a time, {samples} samples each, interleaved (p50 / p99 ms):")
        print(f"  vDAG linear   {lin[0]:7.3f} / {lin[1]:7.3f}")
        print(f"  baseline      {base[0]:7.3f} / {base[1]:7.3f}")
        print(f"  added per hop (p50, vDAG - baseline) / 3: {(lin[0] - base[0]) / 3 * 1000:7.0f} us (target <= 250 us)")
        print(f"  vDAG fan 1-3-1 {fan[0]:6.3f} / {fan[1]:7.3f}   fan/linear p50 {fan[0] / lin[0]:.2f}x (target <= 1.3x)")
        big = "y" * ((1 << 20) - 64)  # by reference at every hop (> 256 KiB)
        assert await c.vdag(LINEAR, big) == big + "-a-b-c"
        n_big = 24
        for name, fn in (("vDAG", lambda: c.vdag(LINEAR, big)), ("baseline", lambda: c.baseline(big))):
            rate = await throughput(fn, n_big, 4)
            print(f"1 MiB text (JSON) through 3 stages, 4 in flight, {n_big} tasks: {name:8} {rate:6.1f} tasks/s = "
                  f"{rate * len(big) / 1e6:6.1f} MB/s")
        blob = bytes(range(256)) * 4096  # 1 MiB as a file, msgpack in and out: the bytes are never text
        assert await c.vdag_file(blob) == blob and await c.baseline_file(blob) == blob
        for _ in range(3):
            await c.vdag_file(blob)
            await c.baseline_file(blob)
        n_file = 4 * n_big
        for name, fb in (("vDAG", lambda: c.vdag_file(blob)), ("baseline", lambda: c.baseline_file(blob))):
            rate = await throughput(fb, n_file, 4)
            print(f"1 MiB file (msgpack) through 3 stages, 4 in flight, {n_file} tasks: {name:8} {rate:6.1f} "
                  f"tasks/s = {rate * len(blob) / 1e6:6.1f} MB/s (target >= 300 MB/s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--samples", type=int, default=300)
    a = ap.parse_args()
    daemons: list[Daemon] = []
    root = Path(tempfile.mkdtemp(prefix="aiosd-bench-vdag-"))
    try:
        where = setup(root, daemons)
        asyncio.run(run(where, min(a.tasks, 20_000), min(a.concurrency, 256), min(a.samples, 5000)))
    finally:
        for d in daemons:
            d.stop()
        kill_process_instances(root)


if __name__ == "__main__":
    main()
