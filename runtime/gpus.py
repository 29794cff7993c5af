"""GPUs: NVML inventory and live metrics through an injectable NVML seam, and per-node
assignment bookkeeping (which instance holds which GPU, exclusive or shared).

No NVML library or no GPU → an empty inventory and one INFO line, never an exception.
NVML calls block, so the async helpers run them in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from runtime.errors import GpuUnavailable, NoGpuError, SpecError
from runtime.spec import GpuDevice, GpuMode, GpuRequest

log = logging.getLogger(__name__)
_MIB = 1 << 20


class Nvml(Protocol):
    """The subset of `pynvml` we use; tests pass a fake with the same names."""

    @property
    def NVMLError(self) -> type[Exception]: ...  # NVML's own names

    @property
    def NVML_TEMPERATURE_GPU(self) -> int: ...

    def nvmlInit(self) -> None: ...  # NVML's own names
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_total_mb: int


@dataclass(frozen=True, slots=True)
class GpuMetrics:
    index: int
    uuid: str
    memory_used_mb: int
    memory_free_mb: int
    memory_total_mb: int
    utilization_pct: int
    memory_utilization_pct: int
    temperature_c: int
    power_w: float
    processes: tuple[int, ...]  # pids


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def default_nvml() -> Nvml | None:
    try:
        import pynvml  # type: ignore[import-untyped,unused-ignore]  # no py.typed
    except ImportError:
        return None
    mod: ModuleType = pynvml
    return mod  # type: ignore[return-value,unused-ignore]  # the module satisfies the Protocol structurally


class GpuInventory:
    """NVML view of this node's GPUs. `open()` once; `inventory` and `metrics()` after."""

    def __init__(self, nvml: Nvml | None = None) -> None:
        self._nvml = nvml
        self._ok = False
        self.inventory: tuple[GpuInfo, ...] = ()
        self.reason = ""

    def open(self) -> tuple[GpuInfo, ...]:
        """Initialise NVML and read the inventory (blocking; see `aopen`)."""
        nv = self._nvml
        if nv is None:
            self.reason = "the nvidia-ml-py package is not installed"
            log.info("no GPUs", extra={"reason": self.reason})
            return ()
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            self.reason = f"NVML unavailable: {e}"
            log.info("no GPUs", extra={"reason": self.reason})
            return ()
        self._ok = True
        try:
            out = []
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                out.append(GpuInfo(i, _text(nv.nvmlDeviceGetUUID(h)), _text(nv.nvmlDeviceGetName(h)),
                                   int(mem.total) // _MIB))
        except nv.NVMLError as e:
            self.reason = f"NVML inventory failed: {e}"
            log.warning("GPU inventory failed", extra={"reason": self.reason})
            return ()
        self.inventory = tuple(out)
        if not out:
            self.reason = "NVML reports no GPU"
            log.info("no GPUs", extra={"reason": self.reason})
        else:
            log.info("GPUs found", extra={"count": len(out), "names": ",".join(g.name for g in out)})
        return self.inventory

    async def aopen(self) -> tuple[GpuInfo, ...]:
        return await asyncio.to_thread(self.open)

    def close(self) -> None:
        if self._ok and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._ok = False

    def metrics(self) -> list[GpuMetrics]:
        """Live metrics for each GPU; a GPU whose query fails is skipped (logged at DEBUG)."""
        nv = self._nvml
        if nv is None or not self._ok:
            return []
        out = []
        for g in self.inventory:
            try:
                h = nv.nvmlDeviceGetHandleByIndex(g.index)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                util = nv.nvmlDeviceGetUtilizationRates(h)
                procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                temp = nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
                try:
                    power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
                except nv.NVMLError:
                    power = 0.0  # not supported on every board
                out.append(GpuMetrics(g.index, g.uuid, int(mem.used) // _MIB, int(mem.free) // _MIB,
                                      int(mem.total) // _MIB, int(util.gpu), int(util.memory), int(temp), power,
                                      tuple(int(p.pid) for p in procs)))
            except nv.NVMLError as e:
                log.debug("GPU metrics failed", extra={"gpu": g.index, "error": str(e)})
        return out

    async def ametrics(self) -> list[GpuMetrics]:
        return await asyncio.to_thread(self.metrics)


@dataclass(frozen=True, slots=True)
class Holding:
    instance_id: str
    mode: GpuMode


class GpuBook:
    """Which instance holds which GPU on this node. Pure bookkeeping; no NVML calls."""

    def __init__(self, inventory: Sequence[GpuInfo]) -> None:
        self._gpus = {g.index: g for g in inventory}
        self._holders: dict[int, list[Holding]] = {g.index: [] for g in inventory}
        self._by_instance: dict[str, tuple[GpuDevice, ...]] = {}

    def held_by(self, instance_id: str) -> tuple[GpuDevice, ...]:
        return self._by_instance.get(instance_id, ())

    def holders(self) -> dict[int, list[Holding]]:
        return {i: list(h) for i, h in self._holders.items()}

    def holdings(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """instance id -> (the GPU indices it holds, whether it holds them exclusively)."""
        out: dict[str, tuple[list[int], bool]] = {}
        for index, held in sorted(self._holders.items()):
            for h in held:
                got = out.setdefault(h.instance_id, ([], h.mode is GpuMode.EXCLUSIVE))
                got[0].append(index)
        return {iid: (tuple(ix), excl) for iid, (ix, excl) in out.items()}

    def allocate(self, instance_id: str, req: GpuRequest, free_mb: dict[int, int] | None = None
                 ) -> tuple[GpuDevice, ...]:
        """Assign GPUs for `req` (idempotent per instance). `free_mb`: live free memory per index.

        Raises: NoGpuError (none on this node), GpuUnavailable (not enough that fit), SpecError (unknown id).
        """
        if req.wanted == 0:
            return ()
        if instance_id in self._by_instance:
            return self._by_instance[instance_id]
        if not self._gpus:
            raise NoGpuError(f"instance {instance_id!r} asks for {req.wanted} GPU(s) but this node has no GPU")
        if req.ids:
            chosen = [self._resolve(i) for i in req.ids]
            for g in chosen:
                why = self._unfit(g, req, free_mb)
                if why:
                    raise GpuUnavailable(f"instance {instance_id!r}: GPU {g.index} ({g.uuid}) {why}")
        else:
            fits = [g for g in self._gpus.values() if not self._unfit(g, req, free_mb)]
            fits.sort(key=lambda g: (len(self._holders[g.index]), g.index))  # spread shared holders
            if len(fits) < req.count:
                raise GpuUnavailable(f"instance {instance_id!r} asks for {req.count} {req.mode.value} GPU(s) "
                                     f"with {req.min_free_mb} MB free; {len(fits)} of {len(self._gpus)} fit")
            chosen = fits[:req.count]
        devs = tuple(GpuDevice(g.index, g.uuid) for g in chosen)
        for g in chosen:
            self._holders[g.index].append(Holding(instance_id, req.mode))
        self._by_instance[instance_id] = devs
        return devs

    def _resolve(self, ident: str) -> GpuInfo:
        for g in self._gpus.values():
            if ident in (g.uuid, str(g.index)):
                return g
        raise SpecError("gpus.ids", f"no GPU {ident!r} on this node (have {sorted(self._gpus)})")

    def _unfit(self, g: GpuInfo, req: GpuRequest, free_mb: dict[int, int] | None) -> str:
        held = self._holders[g.index]
        if held and (req.mode is GpuMode.EXCLUSIVE or any(h.mode is GpuMode.EXCLUSIVE for h in held)):
            return f"is held by {held[0].instance_id} ({held[0].mode.value})"
        free = free_mb.get(g.index, g.memory_total_mb) if free_mb is not None else g.memory_total_mb
        if free < req.min_free_mb:
            return f"has {free} MB free, needs {req.min_free_mb}"
        return ""

    def release(self, instance_id: str) -> None:
        for d in self._by_instance.pop(instance_id, ()):
            self._holders[d.index] = [h for h in self._holders[d.index] if h.instance_id != instance_id]
