"""Node metrics carry AIOS names; GPU summaries aggregate the fake NVML's numbers."""

from __future__ import annotations

from runtime.gpus import GpuInventory
from runtime.metrics import collect, gpu_summary
from runtime.testing import FakeGpu, FakeNvml


def test_node_metrics_have_aios_names_and_sane_values() -> None:
    m = collect().flat()
    for key in ("vcpu.load_15m", "memory.freeMem", "disk.free", "network.rxBytesTotal", "gpu.totalFreeMem"):
        assert key in m
    assert m["vcpu.count"] >= 1 and 0 <= m["memory.averageUtil"] <= 100
    assert m["gpu.count"] == 0 and m["gpu.totalFreeMem"] == 0


def test_gpu_summary_from_fake_nvml() -> None:
    inv = GpuInventory(FakeNvml([FakeGpu(uuid="a", used_mb=1000, util=20, temperature=50),
                                 FakeGpu(uuid="b", used_mb=3000, util=60, temperature=70)]))
    inv.open()
    gm = inv.metrics()
    s = gpu_summary(gm)
    assert s["gpu.count"] == 2 and s["gpu.totalUsedMem"] == 4000
    assert s["gpu.totalFreeMem"] == 2 * 81920 - 4000
    assert s["gpu.avgCudaUtilization"] == 40 and s["gpu.avgTemperature"] == 60
    node = collect(gm)
    assert node.flat()["gpu.totalMem"] == 2 * 81920
    assert [g["gpu_id"] for g in node.per_gpu()] == ["a", "b"]
