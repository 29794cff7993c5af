"""GPU bookkeeping through the supervisor on a "hollow" node (fake NVML, real processes),
and driver selection when podman is absent."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.balancer import Balancer
from runtime.client import InstanceClient
from runtime.drivers.process import ProcessDriver
from runtime.errors import DriverUnavailable, GpuUnavailable
from runtime.gpus import GpuBook, GpuInventory
from runtime.select import open_driver
from runtime.spec import GpuRequest, InstanceSpec
from runtime.supervisor import Supervisor, SupervisorConfig
from runtime.testing import FakeGpu, FakeNvml, write_standin_block
from tests.integration.test_runtime_support import cleanup_processes
from tests.waiting import eventually


async def wait_removed(driver: ProcessDriver) -> None:
    async def check() -> bool:
        return not await driver.list_owned()
    await eventually(check, timeout_s=30)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path) -> Iterator[None]:
    yield
    cleanup_processes(tmp_path)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aiosd-rt-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_instances_get_distinct_exclusive_gpus_and_see_them(tmp_path: Path, sock_dir: Path) -> None:
    inv = GpuInventory(FakeNvml([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")]))
    book = GpuBook(inv.open())
    block = write_standin_block(tmp_path / "blk")
    data = tmp_path / "d"
    async with ProcessDriver(data, "hollow-1") as driver, InstanceClient() as client, \
            Supervisor(SupervisorConfig.test("hollow-1", data, sock_dir), driver, book, client) as sup:
        specs = [InstanceSpec(block_id="g", instance_id=f"g-{i}", block_dir=block, gpus=GpuRequest(count=1))
                 for i in range(2)]
        await sup.set_desired("g", specs)
        with pytest.raises(GpuUnavailable, match="g-2"):
            await sup.set_desired("g", [*specs, InstanceSpec(block_id="g", instance_id="g-2", block_dir=block,
                                                             gpus=GpuRequest(count=1))])
        assert len(sup.status()) == 2  # the failed call changed nothing
        await eventually(lambda: len(sup.healthy("g")) == 2, timeout_s=30)
        assert {st.gpus[0].uuid for st in sup.status()} == {"GPU-a", "GPU-b"}
        bal = Balancer(sup, client)
        seen = {}
        for i in range(4):
            r = await bal.submit("g", {"session_id": "s", "seq_no": i, "data": {}})
            seen[r.instance_id] = r.packets[0]["data"]["gpus"]
        held = {st.instance_id: [st.gpus[0].index] for st in sup.status()}
        assert seen == held
        state = json.loads((data / "instances" / "g-0" / "state.json").read_text())
        assert state["node_id"] == "hollow-1"
        await sup.set_desired("g", [])
        assert book.holders() == {0: [], 1: []}
        await wait_removed(driver)


async def test_auto_driver_falls_back_to_process_when_podman_is_absent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman on this PATH
    caplog.set_level(logging.WARNING, logger="runtime.select")
    async with open_driver("auto", tmp_path / "d", "n1") as d:
        assert d.name == "process"
    assert [r.getMessage() for r in caplog.records] == ["podman unavailable; using the process driver"]
    with pytest.raises(DriverUnavailable, match="podman is not installed"):
        async with open_driver("podman", tmp_path / "d", "n1"):
            pass


async def test_replacing_an_instance_hands_its_gpu_to_the_new_one(tmp_path: Path, sock_dir: Path) -> None:
    book = GpuBook(GpuInventory(FakeNvml([FakeGpu(uuid="GPU-only")])).open())
    block = write_standin_block(tmp_path / "blk")
    data = tmp_path / "d"
    async with ProcessDriver(data, "hollow-2") as driver, \
            Supervisor(SupervisorConfig.test("hollow-2", data, sock_dir), driver, book) as sup:
        one = InstanceSpec(block_id="g", instance_id="old", block_dir=block, gpus=GpuRequest(count=1))
        await sup.set_desired("g", [one])
        two = InstanceSpec(block_id="g", instance_id="new", block_dir=block, gpus=GpuRequest(count=1))
        with pytest.raises(GpuUnavailable):
            await sup.set_desired("g", [one, two])
        await sup.set_desired("g", [two])  # old leaves in the same call: its GPU is free for new
        assert [h.instance_id for h in book.holders()[0]] == ["new"]
        await eventually(lambda: len(sup.healthy("g")) == 1, timeout_s=30)
        await sup.set_desired("g", [])
        await wait_removed(driver)
