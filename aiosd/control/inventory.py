"""This node's resources for the controller: vCPUs, memory and GPUs (NVML, or a fake inventory).

Test seam ("hollow node", ARCHITECTURE §10): `AIOSD_TEST_GPUS=/path/gpus.json` makes the real
daemon read its GPUs through runtime.testing.FakeNvml built from that file, a JSON list of
`{"name", "uuid", "total_mb", "used_mb", "util"}`. Without it the real NVML seam is used; no
NVML = no GPUs, never a crash. NVML calls block, so they run in a thread.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from aiosd.control.controller_wire import GpuReport
from aiosd.errors import ConfigError
from runtime.gpus import GpuInventory, Nvml, default_nvml
from runtime.testing import FakeGpu, FakeNvml

log = logging.getLogger(__name__)
FAKE_GPUS_ENV = "AIOSD_TEST_GPUS"
# A fake inventory file is a handful of entries; refuse anything that is clearly not one.
_MAX_FAKE_BYTES = 64 << 10


def load_fake_nvml(path: Path) -> FakeNvml:
    """Read a fake GPU inventory. Raises: ConfigError naming the entry and field."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{FAKE_GPUS_ENV}: cannot read {path}: {e.strerror}") from None
    if len(raw) > _MAX_FAKE_BYTES:
        raise ConfigError(f"{FAKE_GPUS_ENV}: {path} is larger than {_MAX_FAKE_BYTES} bytes")
    try:
        items = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{FAKE_GPUS_ENV}: {path} is not JSON: {e}") from None
    if not isinstance(items, list):
        raise ConfigError(f"{FAKE_GPUS_ENV}: {path} must hold a JSON list of GPUs")
    gpus: list[FakeGpu] = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise ConfigError(f"{FAKE_GPUS_ENV}: [{i}] must be an object")
        try:
            gpus.append(FakeGpu(name=str(it.get("name", "NVIDIA Fake")), uuid=str(it.get("uuid", f"GPU-fake-{i}")),
                                total_mb=int(it["total_mb"]), used_mb=int(it.get("used_mb", 0)),
                                util=int(it.get("util", 0))))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{FAKE_GPUS_ENV}: [{i}].total_mb/used_mb/util: {e}") from None
    return FakeNvml(gpus)


class LocalInventory:
    """Reads this node's resources; `open()` once, `gpus()` per report."""

    def __init__(self, nvml: Nvml | None = None) -> None:
        self._nvml = nvml
        self._gpus: GpuInventory | None = None

    def open(self) -> None:
        """Blocking (NVML init): run in a thread. Raises: ConfigError for a bad fake file."""
        nvml = self._nvml
        fake = os.environ.get(FAKE_GPUS_ENV)
        if nvml is None and fake:
            nvml = load_fake_nvml(Path(fake))
            log.info("fake GPU inventory loaded", extra={"path": fake, "gpus": nvml.nvmlDeviceGetCount()})
        self._gpus = GpuInventory(nvml if nvml is not None else default_nvml())
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
