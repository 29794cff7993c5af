"""Instances belong to the daemon that started them (node id + data dir), and orphans get reaped.

Issue 18 items 10 and 12, with real processes and real Podman: two daemons on one host with the same
instance ids leave each other alone; a daemon killed with SIGKILL whose data dir is then removed
leaves instances (and its podman service) that the next daemon to start stops, while a live
daemon's instances stay untouched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
import pytest

from runtime.client import InstanceClient
from runtime.drivers import owner as own
from runtime.drivers.base import Driver
from runtime.drivers.podman import PodmanDriver
from runtime.drivers.process import ProcessDriver
from runtime.podman_conf import write_containers_conf
from runtime.spec import Endpoint, HealthSettings, InstanceSpec, Resources, spec_to_json
from runtime.supervisor import Supervisor, SupervisorConfig
from tests.integration.test_runtime_support import (
    CACHE,
    REPO,
    DriverKit,
    PodmanKit,
    cleanup_processes,
    driver_kits,
    run,
    run_env,
)
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(300)

FAST = HealthSettings(interval_s=0.2, unhealthy_threshold=2, timeout_s=2.0, start_timeout_s=60.0)
NODE = "t-owners"  # the podman cleanup removes every container with this node label

# A daemon reduced to its runtime: driver + supervisor in a process of its own, until SIGTERM
# (a clean close) or SIGKILL (what the test does to it).
MINI_DAEMON = r'''
import asyncio, json, signal, sys
from pathlib import Path
from runtime.client import InstanceClient
from runtime.select import open_driver
from runtime.spec import spec_from_json
from runtime.supervisor import Supervisor, SupervisorConfig

async def main(kind, data, sock, node, specs):
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with open_driver(kind, Path(data), node) as driver, InstanceClient() as client:
        async with Supervisor(SupervisorConfig.test(node, Path(data), Path(sock)), driver, client=client) as sup:
            await sup.set_desired(specs[0].block_id, specs)
            while len(sup.healthy(specs[0].block_id)) < len(specs):
                await asyncio.sleep(0.05)
            print(json.dumps({s.instance_id: s.handle for s in sup.status()}), flush=True)
            await stop.wait()

kind, data, sock, node, doc = sys.argv[1:6]
asyncio.run(main(kind, data, sock, node, [spec_from_json(d) for d in json.loads(doc)]))
'''


class MiniDaemon:
    def __init__(self, kind: str, data_dir: Path, node: str, specs: list[InstanceSpec]) -> None:
        self.data_dir = data_dir
        self.sock = Path(tempfile.mkdtemp(prefix="aiosd-own-", dir="/tmp"))
        doc = json.dumps([spec_to_json(s) for s in specs])
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-c", MINI_DAEMON, kind, str(data_dir), str(self.sock), node, doc],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
        self.handles: dict[str, str] = {}

    async def wait_ready(self, timeout_s: float = 120) -> dict[str, str]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout_s)
        except TimeoutError:
            line = b""
        if not line:
            self.proc.kill()
            _out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"mini daemon did not get ready: {err.decode(errors='replace')[-3000:]}")
        self.handles = json.loads(line)
        return self.handles

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        shutil.rmtree(self.sock, ignore_errors=True)

    def endpoint(self, instance_id: str) -> Endpoint:
        short = hashlib.sha256(instance_id.encode()).hexdigest()[:12]
        return Endpoint(socket=self.sock / short / "task.sock")


def marked_under(root: Path) -> list[own.Marked]:
    return [m for m in own.scan_marked() if m.data_dir.startswith(str(root))]


@pytest.fixture
def kit(request: pytest.FixtureRequest) -> Iterator[DriverKit]:
    k: DriverKit = request.param
    k.skip_if_unavailable()
    yield k


@pytest.fixture(autouse=True)
def nothing_left(tmp_path: Path) -> Iterator[None]:
    yield
    cleanup_processes(tmp_path)
    own.reap([m for m in marked_under(tmp_path) if m.leader])  # a failed test's services and instances
    PodmanKit.cleanup(NODE)


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


async def instance_alive(kit: DriverKit, handle: str) -> bool:
    return await kit.exists(handle) and (kit.name != "podman" or
                                         run("podman", "inspect", "-f", "{{.State.Running}}", handle).stdout.strip()
                                         == "true")


@pytest.mark.parametrize("kit", driver_kits(), ids=lambda k: k.name, indirect=True)
async def test_two_daemons_with_the_same_instance_ids_leave_each_other_alone(kit: DriverKit, tmp_path: Path) -> None:
    """Same node id, same block and instance ids, two data dirs: neither removes nor adopts the other's."""
    socks = [Path(tempfile.mkdtemp(prefix="aiosd-own-", dir="/tmp")) for _ in range(2)]
    specs = [kit.spec("echo", f"echo-{i}", tmp_path, health=FAST, block="standin") for i in range(2)]
    try:
        async with kit.driver(tmp_path / "a", NODE) as da, kit.driver(tmp_path / "b", NODE) as db, \
                InstanceClient() as client, \
                Supervisor(SupervisorConfig.test(NODE, tmp_path / "a", socks[0]), da, client=client) as sa, \
                Supervisor(SupervisorConfig.test(NODE, tmp_path / "b", socks[1]), db, client=client) as sb:
            await sa.set_desired("echo", specs)
            await eventually(lambda: len(sa.healthy("echo")) == 2, timeout_s=90)
            await sb.set_desired("echo", specs)
            await eventually(lambda: len(sb.healthy("echo")) == 2, timeout_s=90)
            handles_a = {s.instance_id: s.handle for s in sa.status()}
            handles_b = {s.instance_id: s.handle for s in sb.status()}
            assert set(handles_a.values()).isdisjoint(handles_b.values())
            for _ in range(10):  # several ticks of both: nobody restarted or removed anything
                await asyncio.sleep(0.2)
                assert all(s.restarts == 0 for s in sa.status() + sb.status())
            assert {o.handle for o in (await da.list_owned()).values()} == set(handles_a.values())
            assert {o.handle for o in (await db.list_owned()).values()} == set(handles_b.values())
            await sb.set_desired("echo", [])  # b removes its own instances, and only those
            await eventually(lambda: _none_owned(db), timeout_s=30)
            assert len(sa.healthy("echo")) == 2
            for h in handles_a.values():
                assert await instance_alive(kit, h)
            for iid, ep in sa.healthy("echo"):
                assert await client.health(ep, 2), iid
            if isinstance(da, PodmanDriver) and isinstance(db, PodmanDriver):
                labels = json.loads(run("podman", "inspect", da.container_name("echo-0")).stdout)[0]["Config"][
                    "Labels"]
                assert labels[own.LABEL_OWNER] == da.owner != db.owner
                assert labels[own.LABEL_DATA_DIR] == str(tmp_path / "a")
                assert da.container_name("echo-0") == f"aiosd-{da.owner}-echo-0"
            await sa.set_desired("echo", [])
    finally:
        for s in socks:
            shutil.rmtree(s, ignore_errors=True)


async def _none_owned(driver: Driver) -> bool:
    return not await driver.list_owned()


@pytest.mark.parametrize("kit", driver_kits(), ids=lambda k: k.name, indirect=True)
@pytest.mark.parametrize("reuse", [False, True], ids=["elsewhere", "same-dir-new-identity"])
async def test_orphans_of_a_killed_daemon_whose_data_dir_is_gone_are_reaped(kit: DriverKit, tmp_path: Path,
                                                                            reuse: bool) -> None:
    """kill -9 a daemon, remove its data dir, start another (elsewhere, or in the same dir with a new
    identity): the dead one's instances (and podman service) are stopped; a live daemon's are untouched."""
    specs = [dataclasses.replace(kit.spec("echo", f"echo-{i}", tmp_path, health=FAST, block="standin"),
                                 resources=Resources(memory_mb=256)) for i in range(2)]
    dead_dir = tmp_path / ("long-" + "x" * 60) / "dead"  # podman: its service's socket is in a short /tmp dir
    dead = MiniDaemon(kit.name, dead_dir, NODE, specs)
    live = MiniDaemon(kit.name, tmp_path / "live", NODE, specs)
    try:
        dead_handles = await dead.wait_ready()
        live_handles = await live.wait_ready()
        dead_service = [m.pid for m in marked_under(dead_dir) if m.is_service]
        short_dirs = [Path(m.socket).parent for m in marked_under(dead_dir) if m.is_service]
        assert all(d.name.startswith("aiosd-podman-") and d.is_dir() for d in short_dirs), short_dirs
        assert len(dead_service) == (kit.name == "podman")
        dead_cgroups = [d for h in dead_handles.values() if kit.name == "process"
                        for d in own.own_cgroup_dirs(Path(f"/proc/{h}/cgroup").read_text())]
        assert len(dead_cgroups) == 2 * (kit.name == "process")  # a memory cgroup per process instance
        dead.kill9()
        for h in dead_handles.values():  # SIGKILL leaves them running: the next start would adopt them
            assert await instance_alive(kit, h)
        shutil.rmtree(dead_dir)

        async with kit.driver(dead_dir, "t-owners-new") if reuse else kit.driver(tmp_path / "next", NODE):
            pass
        for h in dead_handles.values():
            assert not await instance_alive(kit, h), h
        assert not any(alive(p) for p in dead_service)
        assert reuse or not any(d.exists() for d in short_dirs)  # (a new service in the same dir uses it)
        assert not [m for m in marked_under(dead_dir) if m.owner != own.owner_id("t-owners-new", dead_dir)]
        assert not any(d.exists() for d in dead_cgroups)  # the reaper removed their cgroups too
        async with InstanceClient() as client:
            for iid, h in live_handles.items():
                assert await instance_alive(kit, h)
                assert await client.health(live.endpoint(iid), 2)
        assert live.proc.poll() is None
    finally:
        dead.stop()
        live.stop()


async def test_own_instances_without_a_record_are_reaped(tmp_path: Path) -> None:
    """An instance of ours whose state record is gone (data dir still there) is nobody's: stopped at start."""
    kit = driver_kits()[0]
    socks = Path(tempfile.mkdtemp(prefix="aiosd-own-", dir="/tmp"))
    try:
        async with ProcessDriver(tmp_path / "d", NODE) as driver, InstanceClient() as client:
            started = []
            for i in range(2):
                (socks / str(i)).mkdir()
                spec = kit.spec("echo", f"echo-{i}", tmp_path, block="standin")
                started.append(await driver.start(spec, str(socks / str(i)), ()))
            for ep in [o.endpoint for o in started]:
                await eventually(functools.partial(client.health, ep, 2), timeout_s=30)
        shutil.rmtree(tmp_path / "d" / "instances" / "echo-0")
        assert alive(int(started[0].handle))
        async with ProcessDriver(tmp_path / "d", NODE) as again:
            assert not alive(int(started[0].handle))
            assert alive(int(started[1].handle))
            assert set(await again.list_owned()) == {"echo-1"}
    finally:
        shutil.rmtree(socks, ignore_errors=True)


@pytest.mark.podman
async def test_containers_from_before_owners_are_still_ours(tmp_path: Path) -> None:
    """A container named and labelled the old way (aiosd-<instance>, node label only) is adopted and
    removed by its node's driver; one with another owner's label is not listed."""
    kit = PodmanKit()
    kit.skip_if_unavailable()
    image = PodmanKit._images["standin"]
    base = ["podman", "run", "-d", "--network=none", "--label", f"aiosd.node={NODE}", "--label", "aiosd.block=b",
            "--label", "aiosd.digest=d0", "--label", "aiosd.socket=/tmp/none/task.sock"]
    env_conf = {"CONTAINERS_CONF": str(write_containers_conf(CACHE))}
    legacy = run_env(env_conf, *base, "--name", "aiosd-leg-0", "--label", "aiosd.instance=leg-0", image, "sleep", "600")
    assert legacy.returncode == 0, legacy.stderr
    foreign = run_env(env_conf, *base, "--name", "aiosd-someoneelse-leg-1", "--label", "aiosd.instance=leg-1",
                      "--label", f"{own.LABEL_OWNER}=someoneelse", "--label", f"{own.LABEL_DATA_DIR}={tmp_path}",
                      image, "sleep", "600")
    assert foreign.returncode == 0, foreign.stderr
    async with PodmanDriver(tmp_path / "d", NODE) as driver:
        owned = await driver.list_owned()
        assert set(owned) == {"leg-0"} and owned["leg-0"].alive
        assert driver.container_name("leg-0") == "aiosd-leg-0"
        await driver.remove("leg-0")
        assert await driver.list_owned() == {}
    assert run("podman", "container", "exists", "aiosd-leg-0").returncode == 1
    assert run("podman", "container", "exists", "aiosd-someoneelse-leg-1").returncode == 0  # not ours: left alone
