"""This node's resources for the controller: vCPUs, memory and GPUs (through aiosd.instances.gpu_source:
real NVML, or the fake inventory tests name). NVML calls block, so they run in a thread. `PeerInventories` asks the other nodes of the cluster
for theirs (`ctl.inventory`), reusing each answer for a short while.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from aiosd.controller.wire import GpuReport, Inventory, InventoryRequest
from aiosd.instances.gpu_source import FAKE_GPUS_ENV, load_fake_nvml, node_nvml
from federation.errors import FederationError
from federation.membership import Member
from federation.sansio import NodeId
from federation.transport import Transport
from runtime.gpus import GpuInventory, Nvml

# A peer's inventory is reused this long; placement then needs no round trip per request.
INVENTORY_TTL_S = 2.0
INVENTORY_TIMEOUT_S = 1.0


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


class PeerInventories:
    """Inventories of peers, asked over `ctl.inventory` and reused for INVENTORY_TTL_S."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, Inventory]] = {}

    async def collect(self, transport: Transport, peers: Sequence[Member], now: float) -> list[Inventory]:
        """The inventories of `peers` (monotonic `now`); those that do not answer in time are left out."""
        self._cache = {k: v for k, v in self._cache.items() if now - v[0] < INVENTORY_TTL_S}

        async def one(node: str, addr: str) -> Inventory | None:
            hit = self._cache.get(node)
            if hit is not None:
                return hit[1]
            try:
                ans = await transport.request(addr, "ctl.inventory", InventoryRequest(), INVENTORY_TIMEOUT_S,
                                              to=NodeId(node))
            except FederationError:
                return None
            if isinstance(ans.body, Inventory) and ans.body.node_id == node:
                self._cache[node] = (now, ans.body)
                return ans.body
            return None

        got = await asyncio.gather(*(one(m.node, m.addr) for m in peers))
        return [i for i in got if i is not None]


__all__ = ["FAKE_GPUS_ENV", "LocalInventory", "PeerInventories", "load_fake_nvml"]
