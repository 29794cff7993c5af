"""This node's resources for the controller: vCPUs, memory and GPUs (through aiosd.instances.gpu_source:
real NVML, or the fake inventory tests name). NVML calls block, so they run in a thread.
"""

from __future__ import annotations

import os

from aiosd.controller.wire import GpuReport
from aiosd.instances.gpu_source import FAKE_GPUS_ENV, load_fake_nvml, node_nvml
from runtime.gpus import GpuInventory, Nvml


class LocalInventory:
    """Reads this node's resources; `open()` once, `gpus()` per report."""

    def __init__(self, nvml: Nvml | None = None) -> None:
        self._nvml = nvml
        self._gpus: GpuInventory | None = None

    def open(self) -> None:
        """Blocking (NVML init): run in a thread. Raises: ConfigError for a bad fake file."""
        self._gpus = GpuInventory(self._nvml if self._nvml is not None else node_nvml())
        self._gpus.open()

    def close(self) -> None:
        if self._gpus is not None:
            self._gpus.close()

    @staticmethod
    def vcpus() -> float:
        return float(os.cpu_count() or 1)

    @staticmethod
    def memory_mb() -> float:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20)

    def gpus(self) -> tuple[GpuReport, ...]:
        """Blocking (NVML): run in a thread."""
        if self._gpus is None:
            return ()
        names = {g.index: g.name for g in self._gpus.inventory}
        return tuple(GpuReport(index=m.index, uuid=m.uuid, name=names.get(m.index, ""),
                               memory_total_mb=float(m.memory_total_mb), memory_free_mb=float(m.memory_free_mb),
                               util_pct=float(min(max(m.utilization_pct, 0), 100)))
                     for m in self._gpus.metrics())


__all__ = ["FAKE_GPUS_ENV", "LocalInventory", "load_fake_nvml"]
