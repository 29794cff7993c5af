"""Driver kits for the runtime's behavioural tests: one per driver, same test suite.

(Named test_runtime_* so that it is owned with the runtime tests; it holds no tests.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
import pytest

from runtime.drivers.base import Driver
from runtime.drivers.podman import PodmanDriver
from runtime.drivers.process import ProcessDriver
from runtime.errors import ImageNotFound, SpecError
from runtime.images import PodmanCli, build_base, build_block, image_exists, tree_hash
from runtime.podman_conf import podman_env, write_containers_conf
from runtime.spec import GpuRequest, HealthSettings, InstanceSpec
from runtime.supervisor import Supervisor
from runtime.testing import write_standin_block

REPO = Path(__file__).resolve().parents[2]
ECHO_DIR = REPO / "examples" / "echo"
AIOS_COMPAT_DIR = REPO / "examples" / "aios_compat"
DEFAULT_HEALTH = HealthSettings()
NO_GPUS = GpuRequest()


class DriverKit:
    name = "?"

    def skip_if_unavailable(self) -> None:
        return None

    def driver(self, data_dir: Path, node_id: str) -> AbstractAsyncContextManager[Driver]:
        raise NotImplementedError

    def spec(self, block_id: str, instance_id: str, tmp_path: Path, *, env: Mapping[str, str] | None = None,
             health: HealthSettings = DEFAULT_HEALTH, queue: int | None = None,
             gpus: GpuRequest = NO_GPUS, block: str = "echo") -> InstanceSpec:
        """block: "echo" / "aios_compat" (examples/, real SDK) or "standin" (runtime.testing's stand-in)."""
        raise NotImplementedError

    @staticmethod
    def echoed(packet: Any) -> dict[str, Any]:
        """The echo block's output: JSON text {data, files: [{metadata, size, sha256}], instance_id, ...}."""
        out: dict[str, Any] = json.loads(packet["data"])
        out["seq_no"] = packet["seq_no"]
        return out

    async def kill(self, driver: Driver, instance_id: str) -> None:
        raise NotImplementedError

    async def exists(self, handle: str) -> bool:
        raise NotImplementedError

    async def assert_unknown_image_rejected(self, sup: Supervisor, tmp_path: Path) -> None:
        raise NotImplementedError


class ProcessKit(DriverKit):
    name = "process"

    def driver(self, data_dir: Path, node_id: str) -> AbstractAsyncContextManager[Driver]:
        return ProcessDriver(data_dir, node_id)

    def spec(self, block_id: str, instance_id: str, tmp_path: Path, *, env: Mapping[str, str] | None = None,
             health: HealthSettings = DEFAULT_HEALTH, queue: int | None = None,
             gpus: GpuRequest = NO_GPUS, block: str = "echo") -> InstanceSpec:
        block_dir = {"echo": ECHO_DIR, "aios_compat": AIOS_COMPAT_DIR}.get(block) or \
            write_standin_block(tmp_path / "standin")
        return InstanceSpec(block_id=block_id, instance_id=instance_id, block_dir=block_dir, env=dict(env or {}),
                            health=health, queue=queue, gpus=gpus)

    async def kill(self, driver: Driver, instance_id: str) -> None:
        pid = int((await driver.list_owned())[instance_id].handle)
        os.killpg(pid, signal.SIGKILL)

    async def exists(self, handle: str) -> bool:
        try:
            return bool(psutil.Process(int(handle)).status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    async def assert_unknown_image_rejected(self, sup: Supervisor, tmp_path: Path) -> None:
        with pytest.raises(SpecError, match="block_dir"):
            await sup.set_desired("img", [InstanceSpec(block_id="img", instance_id="img-0",
                                                       image="localhost/does-not-exist:1")])


def cleanup_processes(root: Path) -> int:
    """Kill every process-driver instance recorded under `root` (tests leave instances running on
    purpose, as a daemon does; this is their teardown). Returns how many were still alive."""
    async def remove_all() -> int:
        n = 0
        for state in root.rglob("instances/*/state.json"):
            try:
                doc = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            driver = ProcessDriver(state.parents[2], str(doc["node_id"]))
            owned = await driver.list_owned()
            obs = owned.get(str(doc["instance_id"]))
            n += bool(obs and obs.alive)
            await driver.remove(str(doc["instance_id"]))
        return n
    return asyncio.run(remove_all())


def podman_usable() -> str:
    """'' when podman + runc are installed, else the reason to skip."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    if shutil.which("runc") is None:
        return "runc is not installed (apt-get install runc); crun fails on hybrid cgroups"
    return ""


CACHE = Path(os.environ.get("AIOSD_TEST_CACHE", "/var/tmp/aiosd-test-cache"))


class PodmanKit(DriverKit):
    """Containers from the stand-in block image, built FROM the cached base image."""

    name = "podman"
    _images: ClassVar[dict[str, str]] = {}
    _error: str | None = None

    def skip_if_unavailable(self) -> None:
        why = podman_usable()
        if why:
            pytest.skip(why)
        if PodmanKit._error:
            pytest.fail(PodmanKit._error)
        if not PodmanKit._images:
            try:
                PodmanKit._images = asyncio.run(self.build_images())
            except Exception as e:
                PodmanKit._error = f"building the test images failed: {e}"
                raise

    @staticmethod
    async def build_images() -> dict[str, str]:
        """Base image (cached by content hash), then the echo and stand-in block images (same)."""
        conf = write_containers_conf(CACHE)
        cli = PodmanCli(env=podman_env(conf))
        base = await build_base(CACHE, cli=cli)
        out = {}
        for name, src in (("echo", ECHO_DIR), ("aios_compat", AIOS_COMPAT_DIR),
                          ("standin", write_standin_block(CACHE / "standin"))):
            tag = f"localhost/aiosd-test-{name}:" + hashlib.sha256((base + tree_hash(src)).encode()).hexdigest()[:12]
            if not await image_exists(tag, cli):
                await build_block(src, tag, base=base, cli=cli)
            out[name] = tag
        return out

    def driver(self, data_dir: Path, node_id: str) -> AbstractAsyncContextManager[Driver]:
        return PodmanDriver(data_dir, node_id)

    def spec(self, block_id: str, instance_id: str, tmp_path: Path, *, env: Mapping[str, str] | None = None,
             health: HealthSettings = DEFAULT_HEALTH, queue: int | None = None,
             gpus: GpuRequest = NO_GPUS, block: str = "echo") -> InstanceSpec:
        image = PodmanKit._images[block]
        return InstanceSpec(block_id=block_id, instance_id=instance_id, image=image,
                            env=dict(env or {}), health=health, queue=queue, gpus=gpus)

    async def kill(self, driver: Driver, instance_id: str) -> None:
        conf = write_containers_conf(CACHE)
        assert isinstance(driver, PodmanDriver)
        r = await asyncio.to_thread(run_env, {"CONTAINERS_CONF": str(conf)}, "podman", "kill",
                                    driver.container_name(instance_id))
        assert r.returncode == 0, r.stderr

    async def exists(self, handle: str) -> bool:
        r = await asyncio.to_thread(run, "podman", "container", "exists", handle)
        return r.returncode == 0

    async def assert_unknown_image_rejected(self, sup: Supervisor, tmp_path: Path) -> None:
        with pytest.raises(ImageNotFound, match="localhost/does-not-exist:1"):
            await sup.set_desired("img", [InstanceSpec(block_id="img", instance_id="img-0",
                                                       image="localhost/does-not-exist:1")])

    @staticmethod
    def cleanup(node_id: str) -> None:
        if podman_usable():
            return
        ids = run("podman", "ps", "-aq", "--filter", f"label=aiosd.node={node_id}").stdout.split()
        if ids:
            run("podman", "rm", "-f", "-t", "0", *ids)


def driver_kits() -> list[DriverKit]:
    return [ProcessKit(), PodmanKit()]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def run_env(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **env})


__all__ = ["REPO", "DriverKit", "ImageNotFound", "PodmanKit", "ProcessKit", "cleanup_processes", "driver_kits", "podman_usable", "run"]
