"""Instance start → healthy through the supervisor (podman driver, REST API) vs `podman run` of the same
image to its first answer on /health, same run, alternating. Reports medians and the ratio (target <= 1.2).

Usage: .venv/bin/python bench/runtime_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.client import InstanceClient
from runtime.drivers.podman import PodmanDriver
from runtime.spec import Endpoint, InstanceSpec
from runtime.supervisor import Supervisor, SupervisorConfig
from tests.integration.test_runtime_support import CACHE, PodmanKit


async def until_healthy(client: InstanceClient, ep: Endpoint, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await client.health(ep, 2):
        if time.monotonic() > deadline:
            raise SystemExit("no answer")
        await asyncio.sleep(0.005)


async def cli_run(image: str, client: InstanceClient, n: int) -> float:
    d = Path(tempfile.mkdtemp(prefix="aiosd-bc-", dir="/tmp"))
    env = {**os.environ, "CONTAINERS_CONF": str(CACHE / "containers.conf")}
    ctx = json.dumps({"block_id": "echo", "instance_id": f"cli-{n}"})
    t0 = time.perf_counter()
    p = await asyncio.create_subprocess_exec(
        "podman", "run", "-d", "--init", "--network=none", "--name", f"aiosd-bench-cli-{n}", "-v", f"{d}:/run/aiosd",
        "-e", "AIOSD_INSTANCE_SOCKET=/run/aiosd/task.sock", "-e", f"AIOSD_INSTANCE_CONTEXT={ctx}", image,
        env=env, stdout=subprocess.DEVNULL)
    await p.wait()
    await until_healthy(client, Endpoint(socket=d / "task.sock"))
    took = time.perf_counter() - t0
    rm = await asyncio.create_subprocess_exec("podman", "rm", "-f", "-t", "0", f"aiosd-bench-cli-{n}", env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await rm.wait()
    shutil.rmtree(d, ignore_errors=True)
    return took


async def main(args: argparse.Namespace) -> dict[str, Any]:
    images = await PodmanKit.build_images()
    image = images["echo"]
    data = Path(tempfile.mkdtemp(prefix="aiosd-bench-"))
    socks = Path(tempfile.mkdtemp(prefix="aiosd-bs-", dir="/tmp"))
    sup_t: list[float] = []
    cli_t: list[float] = []
    try:
        async with PodmanDriver(data, "bench-start") as driver, InstanceClient() as client, \
                Supervisor(SupervisorConfig(node_id="bench-start", data_dir=data, socket_dir=socks), driver,
                           client=client) as sup:
            for n in range(args.runs + 1):
                t0 = time.perf_counter()
                await sup.set_desired("echo", [InstanceSpec(block_id="echo", instance_id=f"s-{n}", image=image)])
                while not sup.healthy("echo"):
                    await asyncio.sleep(0.002)
                took = time.perf_counter() - t0
                await sup.set_desired("echo", [])
                while await driver.list_owned():
                    await asyncio.sleep(0.02)
                c = await cli_run(image, client, n)
                if n:  # the first pair warms caches
                    sup_t.append(took)
                    cli_t.append(c)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(socks, ignore_errors=True)
    s, c = statistics.median(sup_t), statistics.median(cli_t)
    return {"supervisor_start_to_healthy_ms": round(s * 1000), "podman_run_to_first_answer_ms": round(c * 1000),
            "ratio": round(s / c, 3), "runs": args.runs,
            "supervisor_ms": [round(x * 1000) for x in sup_t], "podman_run_ms": [round(x * 1000) for x in cli_t]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    print(json.dumps(asyncio.run(main(ap.parse_args())), indent=2))
