"""Podman-only details: limits, mounts, labels, --init and no network reach the container as asked."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.client import InstanceClient
from runtime.drivers.base import LABEL_BLOCK, LABEL_INSTANCE, LABEL_NODE
from runtime.drivers.podman import PodmanDriver
from runtime.spec import Endpoint, InstanceSpec, Mount, Resources
from tests.integration.test_runtime_support import PodmanKit, podman_usable, run
from tests.waiting import eventually

pytestmark = [pytest.mark.timeout(180), pytest.mark.podman]
NODE = "t-podman-limits"


@pytest.fixture
def images() -> Iterator[dict[str, str]]:
    why = podman_usable()
    if why:
        pytest.skip(why)
    yield asyncio.run(PodmanKit.build_images())
    PodmanKit.cleanup(NODE)


async def test_limits_mounts_labels_init_and_no_network(images: dict[str, str], tmp_path: Path) -> None:
    socks = Path(tempfile.mkdtemp(prefix="aiosd-rt-", dir="/tmp"))
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hi")
    spec = InstanceSpec(block_id="echo", instance_id="lim-0", image=images["echo"],
                        resources=Resources(cpus=0.5, memory_mb=128, pids=64),
                        mounts=(Mount(shared, "/data", read_only=True),), env={"GREETING": "x"})
    try:
        async with PodmanDriver(tmp_path / "d", NODE) as driver, InstanceClient() as client:
            (socks / "i").mkdir()
            obs = await driver.start(spec, str(socks / "i"), ())
            await eventually(lambda: client.health(Endpoint(socket=socks / "i" / "task.sock"), 2), timeout_s=30)
            doc = json.loads(run("podman", "inspect", driver.container_name("lim-0")).stdout)[0]
            host = doc["HostConfig"]
            assert host["Memory"] == 128 << 20
            assert (host["CpuQuota"], host["CpuPeriod"]) == (50_000, 100_000)
            assert host["PidsLimit"] == 64
            assert host["NetworkMode"] == "none"
            assert doc["Config"]["Labels"][LABEL_BLOCK] == "echo"
            assert doc["Config"]["Labels"][LABEL_INSTANCE] == "lim-0"
            assert doc["Config"]["Labels"][LABEL_NODE] == NODE
            assert "GREETING=x" in doc["Config"]["Env"]
            assert any(m["Destination"] == "/data" and not m["RW"] for m in doc["Mounts"])
            assert host["Init"] is True
            r = run("podman", "exec", driver.container_name("lim-0"), "cat", "/data/hello.txt", "/proc/net/dev")
            assert r.stdout.startswith("hi") and "eth0" not in r.stdout, r.stdout + r.stderr
            assert obs.handle == doc["Id"][:12]
            await driver.stop("lim-0", timeout_s=5)
            owned = await driver.list_owned()
            assert not owned["lim-0"].alive and owned["lim-0"].exit_code == 0  # SIGTERM → drained → exit 0
            await driver.remove("lim-0")
            assert "lim-0" not in await driver.list_owned()
    finally:
        shutil.rmtree(socks, ignore_errors=True)
