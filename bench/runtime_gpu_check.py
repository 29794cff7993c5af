"""GPU check for a machine with NVIDIA GPUs (run it on the device machine): the NVML inventory and
live metrics through runtime.gpus, then one block instance (process driver; podman too when
installed) that is given GPU 0 and reports what it sees: CUDA_VISIBLE_DEVICES, `nvidia-smi -L`
inside the instance, and torch.cuda when torch is importable. Prints one JSON document.

Usage: .venv/bin/python bench/runtime_gpu_check.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.balancer import Balancer
from runtime.client import InstanceClient
from runtime.drivers.process import ProcessDriver
from runtime.gpus import GpuBook, GpuInventory, default_nvml
from runtime.spec import GpuRequest, InstanceSpec
from runtime.supervisor import Supervisor, SupervisorConfig
from runtime.testing import STANDIN_BLOCK

# The stand-in block, with its answer extended by what the instance can see of the GPUs.
PROBE = STANDIN_BLOCK.replace(
    '''        out = dict(p, data={"echo": data, "instance_id": iid, "gpus": ctx["allocation_info"]["gpus"]})''',
    '''        import subprocess
        seen = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "NVIDIA_VISIBLE_DEVICES": os.environ.get("NVIDIA_VISIBLE_DEVICES")}
        try:
            seen["nvidia_smi_L"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                                  timeout=20).stdout.strip().splitlines()
        except Exception as e:
            seen["nvidia_smi_L"] = repr(e)
        try:
            import torch
            seen["torch_cuda"] = {"available": torch.cuda.is_available(), "count": torch.cuda.device_count(),
                                  "name0": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
        except Exception as e:
            seen["torch_cuda"] = repr(e)
        out = dict(p, data={"echo": data, "instance_id": iid, "gpus": ctx["allocation_info"]["gpus"], "seen": seen})''')

if PROBE == STANDIN_BLOCK:
    raise SystemExit("runtime.testing.STANDIN_BLOCK changed; update the probe patch in this script")


async def main() -> dict[str, Any]:
    inv = GpuInventory(default_nvml())
    gpus = await inv.aopen()
    out: dict[str, Any] = {"inventory": [dataclasses.asdict(g) for g in gpus], "reason": inv.reason,
                           "metrics": [dataclasses.asdict(m) for m in await inv.ametrics()]}
    if not gpus:
        return out
    data = Path(tempfile.mkdtemp(prefix="aiosd-gpu-"))
    socks = Path(tempfile.mkdtemp(prefix="aiosd-gs-", dir="/tmp"))
    (data / "blk").mkdir()
    (data / "blk" / "block.py").write_text(PROBE)
    try:
        async with ProcessDriver(data, "gpu-check") as driver, InstanceClient() as client, \
                Supervisor(SupervisorConfig.test("gpu-check", data, socks), driver, GpuBook(gpus), client) as sup:
            await sup.set_desired("gpu", [InstanceSpec(block_id="gpu", instance_id="gpu-0", block_dir=data / "blk",
                                                       gpus=GpuRequest(count=1))])
            t0 = time.monotonic()
            while not sup.healthy("gpu") and time.monotonic() - t0 < 60:
                await asyncio.sleep(0.05)
            reply = await Balancer(sup, client).submit("gpu", {"session_id": "g", "seq_no": 0, "data": {}})
            out["process_instance"] = {"assigned": [dataclasses.asdict(g) for g in sup.status()[0].gpus],
                                       "reply": reply.packets[0]["data"]}
            await sup.set_desired("gpu", [])
            while await driver.list_owned():
                await asyncio.sleep(0.05)
    finally:
        inv.close()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(socks, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2, default=str))
