"""GPU inventory through the NVML seam (fake NVML) and per-node assignment bookkeeping."""

from __future__ import annotations

import logging

import pytest

from runtime.errors import GpuUnavailable, NoGpuError, SpecError
from runtime.gpus import GpuBook, GpuInfo, GpuInventory
from runtime.spec import GpuDevice, GpuMode, GpuRequest
from runtime.testing import FakeGpu, FakeNvml

TWO = [GpuInfo(0, "GPU-a", "A100", 40960), GpuInfo(1, "GPU-b", "A100", 40960)]


def test_inventory_and_metrics_from_fake_nvml() -> None:
    nv = FakeNvml([FakeGpu(uuid="GPU-a", used_mb=1024, util=50, pids=[42]), FakeGpu(uuid="GPU-b")])
    inv = GpuInventory(nv)
    assert inv.open() == (GpuInfo(0, "GPU-a", "NVIDIA Fake 80GB", 81920), GpuInfo(1, "GPU-b", "NVIDIA Fake 80GB", 81920))
    m = inv.metrics()
    assert [(x.index, x.memory_used_mb, x.memory_free_mb, x.utilization_pct, x.processes) for x in m] == [
        (0, 1024, 80896, 50, (42,)), (1, 0, 81920, 0, ())]
    assert m[0].power_w == 60.0 and m[0].temperature_c == 40
    inv.close()
    assert nv.inits == 0


@pytest.mark.parametrize("nvml", [None, FakeNvml([], init_error="NVML Shared Library Not Found"), FakeNvml([])])
def test_no_nvml_or_no_gpu_is_empty_with_one_log_line(nvml: FakeNvml | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runtime.gpus")
    inv = GpuInventory(nvml)
    assert inv.open() == ()
    assert inv.metrics() == []
    assert len(caplog.records) == 1 and caplog.records[0].getMessage() == "no GPUs"
    assert inv.reason


def test_exclusive_gpus_are_not_shared() -> None:
    book = GpuBook(TWO)
    a = book.allocate("i1", GpuRequest(count=1))
    b = book.allocate("i2", GpuRequest(count=1))
    assert {a[0].index, b[0].index} == {0, 1}
    with pytest.raises(GpuUnavailable, match="asks for 1 exclusive GPU"):
        book.allocate("i3", GpuRequest(count=1))
    book.release("i1")
    assert book.allocate("i3", GpuRequest(count=1)) == a
    assert book.allocate("i3", GpuRequest(count=1)) == a  # idempotent per instance


def test_shared_holders_spread_and_exclude_exclusive() -> None:
    book = GpuBook(TWO)
    s1 = book.allocate("s1", GpuRequest(count=1, mode=GpuMode.SHARED))
    s2 = book.allocate("s2", GpuRequest(count=1, mode=GpuMode.SHARED))
    assert s1 != s2  # spread over the least-held GPUs
    s3 = book.allocate("s3", GpuRequest(count=1, mode=GpuMode.SHARED))
    assert s3[0].index in (0, 1)
    with pytest.raises(GpuUnavailable):
        book.allocate("x", GpuRequest(count=1, mode=GpuMode.EXCLUSIVE))
    assert [h.instance_id for h in book.holders()[s3[0].index]][-1] == "s3"
    assert book.holdings()["s3"] == ((s3[0].index,), False)
    book.release("s1")
    book.release("s2")
    book.release("s3")
    book.allocate("x", GpuRequest(count=2, mode=GpuMode.EXCLUSIVE))
    assert book.holdings() == {"x": ((0, 1), True)}


def test_min_free_memory_and_explicit_ids() -> None:
    book = GpuBook(TWO)
    with pytest.raises(GpuUnavailable, match="needs 5000"):
        book.allocate("i", GpuRequest(ids=("GPU-b",), min_free_mb=5000), free_mb={0: 40000, 1: 1000})
    assert book.allocate("i", GpuRequest(count=1, min_free_mb=5000), free_mb={0: 40000, 1: 1000}) == (
        GpuDevice(0, "GPU-a"),)
    assert book.allocate("j", GpuRequest(ids=("1",))) == (GpuDevice(1, "GPU-b"),)
    with pytest.raises(SpecError, match="gpus.ids"):
        book.allocate("k", GpuRequest(ids=("GPU-zzz",)))


def test_node_without_gpus_says_so() -> None:
    with pytest.raises(NoGpuError, match="has no GPU"):
        GpuBook(()).allocate("i", GpuRequest(count=1))
    assert GpuBook(()).allocate("i", GpuRequest()) == ()
