"""`resources` are enforced by both drivers (issue 17): the same tests for podman, the process driver
with cgroup v1, and the process driver's rlimit fallback (cgroups not writable).

A block that allocates past its memory limit is killed (cgroups: the kernel's OOM killer, exit 137)
or refused (rlimit: MemoryError); its CPU quota is what it reads in its own cgroup and what it gets.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from runtime.client import InstanceClient
from runtime.drivers.base import Driver, Observed
from runtime.drivers.limits import CgroupLimits, own_cgroup, plan, wrap
from runtime.drivers.process import ProcessDriver
from runtime.spec import InstanceSpec, Resources
from tests.integration.test_runtime_support import DriverKit, PodmanKit, ProcessKit, cleanup_processes
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(300)
NODE = "t-limits"
MEM_MB = 128


class ProcessRlimitKit(ProcessKit):
    """The process driver where cgroups cannot be written: memory by RLIMIT_DATA, no CPU quota."""

    name = "process-rlimit"

    def driver(self, data_dir: Path, node_id: str) -> AbstractAsyncContextManager[Driver]:
        return ProcessDriver(data_dir, node_id, limits=CgroupLimits(force_rlimit=True))


def cgroups_writable() -> str:
    probe = Path("/sys/fs/cgroup/memory") / own_cgroup("memory", Path("/proc/self/cgroup").read_text()).lstrip("/")
    if not probe.is_dir():
        return "no cgroup v1 memory controller here"
    try:
        (probe / "aiosd-probe").mkdir(exist_ok=True)
        (probe / "aiosd-probe").rmdir()
    except OSError as e:
        return f"cgroup v1 not writable here: {e}"
    return ""


class ProcessCgroupKit(ProcessKit):
    name = "process-cgroup"

    def skip_if_unavailable(self) -> None:
        why = cgroups_writable()
        if why:
            pytest.skip(why)


KITS = [ProcessCgroupKit(), ProcessRlimitKit(), PodmanKit()]


@pytest.fixture(params=KITS, ids=lambda k: k.name)
def kit(request: pytest.FixtureRequest) -> Iterator[DriverKit]:
    k: DriverKit = request.param
    k.skip_if_unavailable()
    yield k
    PodmanKit.cleanup(NODE)


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aiosd-lim-", dir="/tmp"))
    yield d
    cleanup_processes(tmp_path)
    shutil.rmtree(d, ignore_errors=True)


def limited(kit: DriverKit, tmp_path: Path, iid: str, resources: Resources, **env: str) -> InstanceSpec:
    spec = kit.spec("lim", iid, tmp_path, block="standin", env=env)
    return dataclasses.replace(spec, resources=resources)


async def start(driver: Driver, spec: InstanceSpec, socks: Path) -> Observed:
    (socks / spec.instance_id).mkdir()
    return await driver.start(spec, str(socks / spec.instance_id), ())


async def exited(driver: Driver, iid: str) -> Observed | None:
    obs = (await driver.list_owned()).get(iid)
    return obs if obs is not None and not obs.alive else None


def state(tmp_path: Path, iid: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((tmp_path / "d" / "instances" / iid / "state.json").read_text())
    return doc


async def test_a_block_past_its_memory_limit_is_killed_or_refused(kit: DriverKit, tmp_path: Path, socks: Path) -> None:
    async with kit.driver(tmp_path / "d", NODE) as driver, InstanceClient() as client:
        await start(driver, limited(kit, tmp_path, "hog", Resources(memory_mb=MEM_MB), STANDIN_ALLOC_MB="400"),
                          socks)
        small = await start(driver, limited(kit, tmp_path, "small", Resources(memory_mb=MEM_MB),
                                            STANDIN_ALLOC_MB="16"), socks)
        await eventually(lambda: client.health(small.endpoint, 2), timeout_s=60)  # under its limit: serves
        gone = await eventually(lambda: exited(driver, "hog"), timeout_s=60)
        lines = "\n".join(await driver.last_lines("hog", 20))
        assert "allocated" not in lines, lines
        if kit.name == "process-rlimit":
            assert gone.exit_code == 1 and "MemoryError" in lines, (gone, lines)
            assert state(tmp_path, "hog")["limits"] == "rlimit"
        else:
            assert gone.exit_code == 137, (gone, lines)  # SIGKILL from the OOM killer
        assert (await driver.list_owned())["small"].alive
        for iid in ("hog", "small"):
            await driver.remove(iid)


async def test_cpu_quota_and_limits_are_what_the_block_sees(kit: DriverKit, tmp_path: Path, socks: Path) -> None:
    res = Resources(cpus=0.2, memory_mb=256, pids=64)
    async with kit.driver(tmp_path / "d", NODE) as driver, InstanceClient() as client:
        obs = await start(driver, limited(kit, tmp_path, "cpu", res, STANDIN_REPORT_LIMITS="1", STANDIN_BURN_S="1.5"),
                          socks)
        await eventually(lambda: client.health(obs.endpoint, 2), timeout_s=60)

        async def limits_line() -> str | None:  # the log can lag the health answer (podman logs, a loaded box)
            return next((ln for ln in await driver.last_lines("cpu", 20) if ln.startswith("standin: limits ")), None)

        line = await eventually(limits_line, timeout_s=30)
        report = json.loads(line.removeprefix("standin: limits "))
        if kit.name == "process-rlimit":  # said, not silently dropped
            doc = state(tmp_path, "cpu")
            assert doc["limits"] == "rlimit" and doc["unenforced"] == ["cpus", "pids"]
        else:
            assert (report["cpu_quota"], report["cpu_period"]) == ("20000", "100000"), report
            assert report["memory"] == str(256 << 20) and report["pids"] == "64", report
            assert report["cpu_ratio"] < 0.35, report  # 0.2 CPU, with room for scheduling granularity
        if kit.name == "process-cgroup":
            recorded = state(tmp_path, "cpu")["cgroups"]
            assert isinstance(recorded, list)
            dirs = [Path(d) for d in recorded]
            assert len(dirs) == 3 and all(d.is_dir() for d in dirs), dirs  # cpu, memory, pids
            await driver.remove("cpu")
            assert not any(d.exists() for d in dirs)  # removed with the instance
        else:
            await driver.remove("cpu")


def test_plan_and_wrapper_are_what_podman_sets() -> None:
    assert plan(Resources()) == {}
    assert plan(Resources(cpus=1.5, memory_mb=6, pids=1)) == {
        "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000"},
        "memory": {"memory.limit_in_bytes": str(6 << 20), "memory.memsw.limit_in_bytes": str(6 << 20)},
        "pids": {"pids.max": "1"}}
    cmd = wrap(["python3", "block.py"], ["/x/cgroup.procs"])
    assert cmd[:2] == ["/bin/sh", "-c"] and cmd[3:] == ["aiosd-limits", "/x/cgroup.procs", "--", "python3", "block.py"]
    assert own_cgroup("memory", "4:memory:/a/b\n1:cpu,cpuacct:/c\n") == "/a/b"
    assert own_cgroup("cpu", "1:cpu,cpuacct:/c\n") == "/c" and own_cgroup("pids", "") == "/"
