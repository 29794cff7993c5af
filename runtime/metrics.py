"""Per-node resource metrics (psutil + NVML summaries) under AIOS's metric names.

`collect()` blocks (psutil reads /proc), so call `acollect()` from the loop. Storing and
gossiping the summaries is the daemon's job, not this module's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from runtime.gpus import GpuMetrics

_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    values: tuple[tuple[str, float], ...]  # AIOS name → value, e.g. ("vcpu.load_15m", 0.4)
    gpus: tuple[GpuMetrics, ...]

    def flat(self) -> dict[str, float]:
        return dict(self.values)

    def per_gpu(self) -> list[dict[str, float | str]]:
        """AIOS per-GPU documents (powerUtilization is a percentage of the board limit; 0 when unknown)."""
        return [{"gpu_id": g.uuid, "usedMem": g.memory_used_mb, "freeMem": g.memory_free_mb,
                 "totalMem": g.memory_total_mb, "memUtilization": g.memory_utilization_pct,
                 "cudaUtilization": g.utilization_pct, "powerUtilization": 0.0, "powerDrawW": g.power_w,
                 "temperature": g.temperature_c} for g in self.gpus]


def gpu_summary(gpus: Sequence[GpuMetrics]) -> dict[str, float]:
    n = len(gpus)
    if n == 0:
        return {"gpu.count": 0.0, "gpu.totalMem": 0.0, "gpu.totalUsedMem": 0.0, "gpu.totalFreeMem": 0.0,
                "gpu.avgMemUtilization": 0.0, "gpu.avgCudaUtilization": 0.0, "gpu.avgPowerUtilization": 0.0,
                "gpu.avgTemperature": 0.0}
    return {
        "gpu.count": float(n),
        "gpu.totalMem": float(sum(g.memory_total_mb for g in gpus)),
        "gpu.totalUsedMem": float(sum(g.memory_used_mb for g in gpus)),
        "gpu.totalFreeMem": float(sum(g.memory_free_mb for g in gpus)),
        "gpu.avgMemUtilization": sum(g.memory_utilization_pct for g in gpus) / n,
        "gpu.avgCudaUtilization": sum(g.utilization_pct for g in gpus) / n,
        "gpu.avgPowerUtilization": 0.0,  # AIOS reports 0 here as well (reference/aios.md §7)
        "gpu.avgTemperature": sum(g.temperature_c for g in gpus) / n,
    }


def collect(gpus: Sequence[GpuMetrics] = (), disk_path: Path = Path("/")) -> NodeMetrics:
    """Read CPU, memory, swap, disk and network counters now (blocking)."""
    l1, l5, l15 = os.getloadavg()
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    du = psutil.disk_usage(str(disk_path))
    net = psutil.net_io_counters()
    values = {
        "vcpu.count": float(psutil.cpu_count() or 0),
        "vcpu.load_1m": l1, "vcpu.load_5m": l5, "vcpu.load_15m": l15,
        "vcpu.processes": float(len(psutil.pids())),
        "memory.totalMem": vm.total / _MIB, "memory.freeMem": vm.available / _MIB,
        "memory.usedMem": (vm.total - vm.available) / _MIB, "memory.averageUtil": float(vm.percent),
        "memory.usedSwap": sw.used / _MIB, "memory.freeSwap": sw.free / _MIB,
        "disk.free": du.free / _MIB, "disk.used": du.used / _MIB, "disk.max": du.total / _MIB,
        "network.txBytesTotal": float(net.bytes_sent), "network.rxBytesTotal": float(net.bytes_recv),
    }
    values.update(gpu_summary(gpus))
    return NodeMetrics(tuple(sorted(values.items())), tuple(gpus))


async def acollect(gpus: Sequence[GpuMetrics] = (), disk_path: Path = Path("/")) -> NodeMetrics:
    return await asyncio.to_thread(collect, gpus, disk_path)
