"""Task path through the local balancer vs the SDK endpoint called directly (same run, same instances).

1. Latency, 1 KB tasks, sequential: direct POST /v1/task on one aiohttp session vs Balancer.submit
   (interleaved blocks). Reports p50/p99 and the added p50 (target <= 250 us).
2. Throughput, 1 KB tasks, C concurrent submits over 2 instances through the balancer (target >= 5,000/s).
3. 1 MB payloads through the balancer: MB/s one way (target >= 500 MB/s).
Instances are the examples/echo block on the real SDK, run by the process driver (or --driver podman).

Usage: .venv/bin/python bench/runtime_tasks.py [--driver process|podman] [--samples 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from runtime.balancer import Balancer
from runtime.client import InstanceClient
from runtime.select import open_driver
from runtime.spec import InstanceSpec
from runtime.supervisor import Supervisor, SupervisorConfig

ECHO = Path(__file__).resolve().parents[1] / "examples" / "echo"


def packet(size: int, i: int = 0) -> bytes:
    out: bytes = msgpack.packb({"session_id": "s", "seq_no": i, "data": json.dumps({"i": i}),
                                "files": [{"metadata": "", "file_data": os.urandom(size)}]}, use_bin_type=True)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def spec_for(driver: str, iid: str) -> InstanceSpec:
    if driver == "podman":
        from tests.integration.test_runtime_support import PodmanKit
        images = await PodmanKit.build_images()
        return InstanceSpec(block_id="echo", instance_id=iid, image=images["echo"], workers=4)
    return InstanceSpec(block_id="echo", instance_id=iid, block_dir=ECHO, workers=4)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="aiosd-bench-"))
    socks = Path(tempfile.mkdtemp(prefix="aiosd-bs-", dir="/tmp"))
    out: dict[str, Any] = {"driver": args.driver}
    try:
        async with open_driver(args.driver, data, "bench") as driver, InstanceClient() as client, \
                Supervisor(SupervisorConfig(node_id="bench", data_dir=data, socket_dir=socks), driver,
                           client=client) as sup:
            await sup.set_desired("echo", [await spec_for(args.driver, f"echo-{i}") for i in range(2)])
            deadline = time.monotonic() + 120
            while len(sup.healthy("echo")) < 2:
                if time.monotonic() > deadline:
                    raise SystemExit(f"instances not healthy: {sup.status()}")
                await asyncio.sleep(0.05)
            bal = Balancer(sup, client)
            body = packet(1024)
            _, ep = sup.healthy("echo")[0]
            for _ in range(200):  # warm both paths
                await client.task(ep, body, 10)
                await bal.submit("echo", body)
            direct: list[float] = []
            via: list[float] = []
            for _ in range(args.samples // 100):
                for _ in range(100):
                    t = time.perf_counter()
                    r = await client.task(ep, body, 10)
                    direct.append(time.perf_counter() - t)
                    assert r.status == 200
                for _ in range(100):
                    t = time.perf_counter()
                    await bal.submit("echo", body)
                    via.append(time.perf_counter() - t)
            out["latency_1kb"] = {
                "direct_p50_us": round(statistics.median(direct) * 1e6), "direct_p99_us": round(pct(direct, .99) * 1e6),
                "balancer_p50_us": round(statistics.median(via) * 1e6), "balancer_p99_us": round(pct(via, .99) * 1e6),
                "added_p50_us": round((statistics.median(via) - statistics.median(direct)) * 1e6)}

            async def pump(body: bytes, stop: float, counter: list[int]) -> None:
                while time.perf_counter() < stop:
                    await bal.submit("echo", body)
                    counter[0] += 1

            for name, size, conc in (("throughput_1kb", 1024, args.concurrency), ("payload_1mb", 1 << 20, 4)):
                b = packet(size)
                count = [0]
                t0 = time.perf_counter()
                await asyncio.gather(*(pump(b, t0 + args.seconds, count) for _ in range(conc)))
                took = time.perf_counter() - t0
                out[name] = {"tasks_per_s": round(count[0] / took), "concurrency": conc,
                             "mb_per_s_one_way": round(count[0] * size / took / 1e6, 1)}
            # the direct baseline for 1 MB, one instance, same concurrency
            b = packet(1 << 20)
            n = 0
            t0 = time.perf_counter()
            while time.perf_counter() < t0 + args.seconds:
                await asyncio.gather(*(client.task(ep, b, 30) for _ in range(4)))
                n += 4
            out["payload_1mb"]["direct_one_instance_mb_per_s"] = round(n * (1 << 20) / (time.perf_counter() - t0) / 1e6, 1)
            await sup.set_desired("echo", [])
            while await driver.list_owned():
                await asyncio.sleep(0.05)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(socks, ignore_errors=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", default="process", choices=["process", "podman"])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    print(json.dumps(asyncio.run(main(ap.parse_args())), indent=2))
