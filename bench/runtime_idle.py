"""Supervisor overhead with 10 idle instances: CPU of this process (supervisor loop, health checks,
driver calls) and, for podman, of aiosd's podman service, over a window with default settings
(tick 1 s, health every 30 s). Target: <= 2% of one core.

Usage: .venv/bin/python bench/runtime_idle.py [--driver process|podman] [--window 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from runtime.client import InstanceClient
from runtime.select import open_driver
from runtime.spec import InstanceSpec
from runtime.supervisor import Supervisor, SupervisorConfig

ECHO = Path(__file__).resolve().parents[1] / "examples" / "echo"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="aiosd-bench-"))
    socks = Path(tempfile.mkdtemp(prefix="aiosd-bs-", dir="/tmp"))
    image = None
    if args.driver == "podman":
        from tests.integration.test_runtime_support import PodmanKit
        image = (await PodmanKit.build_images())["echo"]
    try:
        async with open_driver(args.driver, data, "bench-idle") as driver, InstanceClient() as client, \
                Supervisor(SupervisorConfig(node_id="bench-idle", data_dir=data, socket_dir=socks), driver,
                           client=client) as sup:
            specs = [InstanceSpec(block_id="echo", instance_id=f"idle-{i}", image=image,
                                  block_dir=None if image else ECHO) for i in range(args.instances)]
            await sup.set_desired("echo", specs)
            while len(sup.healthy("echo")) < args.instances:
                await asyncio.sleep(0.05)
            svc = getattr(driver, "_service", None)
            svc_proc = psutil.Process(svc.pid) if svc is not None else None
            me = psutil.Process()
            c0, s0, t0, ticks0 = me.cpu_times(), svc_proc.cpu_times() if svc_proc else None, time.monotonic(), sup.ticks
            await asyncio.sleep(args.window)
            c1, s1, t1 = me.cpu_times(), svc_proc.cpu_times() if svc_proc else None, time.monotonic()
            wall = t1 - t0
            own = (c1.user + c1.system - c0.user - c0.system) / wall * 100
            out: dict[str, Any] = {"driver": args.driver, "instances": args.instances, "window_s": round(wall, 1),
                                   "ticks": sup.ticks - ticks0, "supervisor_cpu_pct_of_core": round(own, 2)}
            if s0 is not None and s1 is not None:
                out["podman_service_cpu_pct_of_core"] = round((s1.user + s1.system - s0.user - s0.system) / wall * 100, 2)
            await sup.set_desired("echo", [])
            while await driver.list_owned():
                await asyncio.sleep(0.05)
            return out
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(socks, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", default="process", choices=["process", "podman"])
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--window", type=float, default=20.0)
    print(json.dumps(asyncio.run(main(ap.parse_args())), indent=2))
