"""Supervisor + driver behaviour with real processes (and real Podman containers when present).

Every test runs once per driver; the podman variant skips with a reason when podman is absent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
import pytest

from runtime.balancer import Balancer
from runtime.client import InstanceClient
from runtime.drivers.base import Driver
from runtime.drivers.process import ProcessDriver
from runtime.errors import InstanceBusy, NoGpuError, SpecError, TaskFailed
from runtime.spec import HealthSettings, InstanceState
from runtime.supervisor import Supervisor, SupervisorConfig
from tests.integration.test_runtime_support import (
    DriverKit,
    PodmanKit,
    ProcessKit,
    cleanup_processes,
    driver_kits,
)
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(300)  # the first podman test may build the base image (debootstrap)

FAST_HEALTH = HealthSettings(interval_s=0.2, unhealthy_threshold=2, timeout_s=2.0, start_timeout_s=30.0)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for instance sockets (sun_path is 107 bytes; tmp_path can be longer)."""
    d = Path(tempfile.mkdtemp(prefix="aiosd-rt-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=driver_kits(), ids=lambda k: k.name)
def kit(request: pytest.FixtureRequest) -> Iterator[DriverKit]:
    k: DriverKit = request.param
    k.skip_if_unavailable()
    yield k
    PodmanKit.cleanup(node_id(request.node.name))


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path) -> Iterator[None]:
    """Supervisors leave instances running on close (the next daemon adopts them); tests must not."""
    yield
    cleanup_processes(tmp_path)


def node_id(test_name: str) -> str:
    """A node id per test: the podman driver owns (and removes) every container with its node label."""
    return "t-" + hashlib.sha256(test_name.encode()).hexdigest()[:10]


@asynccontextmanager
async def node(kit: DriverKit, data_dir: Path, sock_dir: Path, **cfg_changes: Any
               ) -> AsyncIterator[tuple[Supervisor, Balancer, Driver]]:
    nid = node_id(os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].split("::")[-1])
    async with kit.driver(data_dir, nid) as driver, InstanceClient() as client:
        cfg = dataclasses.replace(SupervisorConfig.test(nid, data_dir, sock_dir), **cfg_changes)
        async with Supervisor(cfg, driver, client=client) as sup:
            yield sup, Balancer(sup, client, task_timeout_s=20), driver


def states(sup: Supervisor) -> dict[str, InstanceState]:
    return {s.instance_id: s.state for s in sup.status()}


def all_healthy(sup: Supervisor, n: int) -> Callable[[], bool]:
    return lambda: len(sup.healthy("echo")) == n


async def test_two_instances_answer_200_tasks_with_files_spread_over_both(
        kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, bal, _):
        await sup.set_desired("echo", [kit.spec("echo", f"echo-{i}", tmp_path, health=FAST_HEALTH) for i in range(2)])
        await eventually(all_healthy(sup, 2), timeout_s=60)

        async def one(i: int) -> tuple[int, Any]:
            packet = {"session_id": f"s{i}", "seq_no": i, "data": json.dumps({"i": i}),
                      "files": [{"metadata": json.dumps({"n": i}), "file_data": os.urandom(64 + i)}],
                      "frame_ptr": "", "output_ptr": "", "ts": time.time()}
            reply = await bal.submit("echo", packet)
            return i, (packet, reply)

        results = []
        for batch in range(10):
            results += await asyncio.gather(*(one(batch * 20 + j) for j in range(20)))
        for i, (packet, reply) in results:
            out = kit.echoed(reply.packets[0])
            assert out["data"] == {"i": i}, out
            f = packet["files"][0]
            assert out["files"] == [{"metadata": f["metadata"], "size": len(f["file_data"]),
                                     "sha256": hashlib.sha256(f["file_data"]).hexdigest()}]
            assert out["seq_no"] == i
            assert out["instance_id"] == reply.instance_id
        assert sum(bal.served.values()) == 200
        assert len(bal.served) == 2 and min(bal.served.values()) >= 40, bal.served


async def test_killed_instance_restarts_within_backoff(kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, bal, driver):
        await sup.set_desired("echo", [kit.spec("echo", "echo-0", tmp_path, health=FAST_HEALTH)])
        await eventually(all_healthy(sup, 1), timeout_s=60)
        before = sup.status()[0]
        t0 = time.monotonic()
        await kit.kill(driver, "echo-0")
        await eventually(lambda: sup.status()[0].restarts == 1 and sup.status()[0].state is InstanceState.HEALTHY,
                         timeout_s=30)
        took = time.monotonic() - t0
        after = sup.status()[0]
        assert after.handle != before.handle
        assert after.last_exit == 137
        reply = await bal.submit("echo", {"session_id": "k", "seq_no": 1, "data": json.dumps("after")})
        assert kit.echoed(reply.packets[0])["data"] == "after"  # no stale keep-alive connection
        # back-off 0.2 s + a tick + the start itself; generous for a loaded 2-core box
        assert took < sup.cfg.backoff_initial_s + 15, took


async def test_aios_shaped_two_input_join_meets_on_one_instance_by_session(
        kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, bal, _):
        specs = [kit.spec("join", f"join-{i}", tmp_path, health=FAST_HEALTH, block="aios_compat") for i in range(2)]
        await sup.set_desired("join", specs)
        await eventually(lambda: len(sup.healthy("join")) == 2, timeout_s=60)
        for n in range(6):
            sid = f"session-{n}"
            first = await bal.submit("join", {"session_id": sid, "seq_no": n,
                                              "data": json.dumps({"source": "a", "value": n})}, sid, sticky=True)
            assert first.packets == []  # held by the Muxer until the other input arrives
            second = await bal.submit("join", {"session_id": sid, "seq_no": n,
                                               "data": json.dumps({"source": "b", "value": 10})}, sid, sticky=True)
            assert second.instance_id == first.instance_id
            assert json.loads(second.packets[0]["data"]) == {"sum": n + 10, "sources": ["a", "b"], "seq_no": n}
        assert len(bal.served) == 2  # sessions spread over both instances


async def test_tasks_keep_succeeding_when_an_instance_dies(kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    # a slow reconcile tick, so that the balancer meets the dead instance before the supervisor does
    async with node(kit, tmp_path / "d", sock_dir, tick_s=60.0) as (sup, bal, driver):
        await sup.set_desired("echo", [kit.spec("echo", f"echo-{i}", tmp_path, health=FAST_HEALTH) for i in range(2)])
        await eventually(all_healthy(sup, 2), timeout_s=60)
        for i in range(10):  # both instances hold pooled keep-alive connections now
            await bal.submit("echo", {"session_id": "w", "seq_no": i, "data": "1"})
        await kit.kill(driver, "echo-0")
        for i in range(40):  # the supervisor has not noticed yet: the balancer retries on echo-1
            reply = await bal.submit("echo", {"session_id": "d", "seq_no": i, "data": json.dumps(i)})
            assert kit.echoed(reply.packets[0])["data"] == i
        assert bal.retries >= 1


async def test_new_supervisor_adopts_running_instances_without_duplicates(
        kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    data = tmp_path / "d"
    async with node(kit, data, sock_dir) as (sup, _, _):
        await sup.set_desired("echo", [kit.spec("echo", f"echo-{i}", tmp_path, health=FAST_HEALTH) for i in range(2)])
        await eventually(all_healthy(sup, 2), timeout_s=60)
        handles = {s.instance_id: s.handle for s in sup.status()}
    async with node(kit, data, sock_dir) as (sup2, bal2, driver2):
        await eventually(all_healthy(sup2, 2), timeout_s=30)
        assert {s.instance_id: s.handle for s in sup2.status()} == handles
        assert all(s.restarts == 0 for s in sup2.status())
        owned = await driver2.list_owned()
        assert sorted(owned) == ["echo-0", "echo-1"] and all(o.alive for o in owned.values())
        reply = await bal2.submit("echo", {"session_id": "x", "seq_no": 1, "data": json.dumps({"k": 1}), "files": []})
        assert kit.echoed(reply.packets[0])["data"] == {"k": 1}
        await sup2.set_desired("echo", [])
        await wait_none_owned(driver2)


async def wait_none_owned(driver: Driver, timeout_s: float = 30) -> None:
    async def check() -> bool:
        return not await driver.list_owned()
    await eventually(check, timeout_s=timeout_s)


async def test_removing_instances_removes_their_processes(kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, _, driver):
        await sup.set_desired("echo", [kit.spec("echo", f"echo-{i}", tmp_path, health=FAST_HEALTH) for i in range(2)])
        await eventually(all_healthy(sup, 2), timeout_s=60)
        handles = [s.handle for s in sup.status()]
        await sup.set_desired("echo", [])
        assert sup.status() == []
        await wait_none_owned(driver)
        for h in handles:
            assert not await kit.exists(h)


async def test_block_that_exits_at_once_shows_crashloop_with_last_lines(
        kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, _, _):
        spec = kit.spec("bad", "bad-0", tmp_path, env={"STANDIN_EXIT_AT_ONCE": "3"}, block="standin")
        await sup.set_desired("bad", [spec])
        await eventually(lambda: sup.status()[0].state is InstanceState.CRASHLOOP and sup.status()[0].last_log_lines,
                         timeout_s=60)
        st = sup.status()[0]
        assert st.last_exit == 3
        assert any("refusing to start" in line for line in st.last_log_lines), st.last_log_lines
        assert sup.healthy("bad") == []
        lines = [line async for line in sup.logs("bad-0", tail=5)]
        assert any("refusing to start" in line for line in lines)


async def test_unhealthy_instance_is_restarted_after_threshold(kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, _, _):
        await sup.set_desired("echo", [kit.spec("echo", "echo-0", tmp_path, health=FAST_HEALTH, block="standin")])
        await eventually(all_healthy(sup, 1), timeout_s=60)
        ep = sup.healthy("echo")[0][1]
        assert ep.socket is not None
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(ep.socket))) as s, \
                s.post("http://x/mgmt", json={"mgmt_action": "set_health", "mgmt_data": False}) as r:
            assert r.status == 200
        await eventually(lambda: sup.status()[0].state is InstanceState.UNHEALTHY or sup.status()[0].restarts,
                         timeout_s=10)
        await eventually(lambda: sup.status()[0].restarts == 1 and sup.status()[0].state is InstanceState.HEALTHY,
                         timeout_s=30)


async def test_task_errors_name_the_block_and_full_queue_is_busy(
        kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, bal, _):
        await sup.set_desired("echo", [kit.spec("echo", "echo-0", tmp_path, health=FAST_HEALTH)])
        await eventually(all_healthy(sup, 1), timeout_s=60)
        with pytest.raises(TaskFailed) as e:
            await bal.submit("echo", {"session_id": "a", "seq_no": 0, "data": json.dumps({"raise": "boom"})})
        assert e.value.block_id == "echo" and e.value.error_type == "RuntimeError" and "boom" in str(e.value)
        ok = await bal.submit("echo", {"session_id": "a", "seq_no": 1, "data": json.dumps({"after": 1})})
        assert kit.echoed(ok.packets[0])["data"] == {"after": 1}  # the instance keeps serving
        spec = kit.spec("echo", "echo-0", tmp_path, health=FAST_HEALTH, queue=1, block="standin")
        await sup.set_desired("echo", [spec])
        await eventually(lambda: sup.status()[0].restarts == 1 and all_healthy(sup, 1)(), timeout_s=60)
        slow = asyncio.create_task(bal.submit("echo", {"session_id": "a", "seq_no": 1, "data": {"sleep_s": 5},
                                                       "files": []}))
        try:
            async def busy() -> bool:
                try:
                    await bal.submit("echo", {"session_id": "b", "seq_no": 2, "data": {}, "files": []})
                except InstanceBusy:
                    return True
                return False
            assert await eventually(busy, timeout_s=4)
        finally:
            slow.cancel()
            await asyncio.gather(slow, return_exceptions=True)


async def test_bad_requests_change_nothing(kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, _, driver):
        from runtime.spec import GpuRequest
        with pytest.raises(NoGpuError, match="no GPU"):
            await sup.set_desired("g", [kit.spec("g", "g-0", tmp_path, gpus=GpuRequest(count=1))])
        with pytest.raises(SpecError, match="instance_id"):
            await sup.set_desired("g", [kit.spec("g", "bad id", tmp_path)])
        with pytest.raises(SpecError, match="block_id"):
            await sup.set_desired("g", [kit.spec("other", "o-0", tmp_path)])
        await kit.assert_unknown_image_rejected(sup, tmp_path)
        assert sup.status() == []
        assert not await driver.list_owned()


async def test_sigterm_to_process_group_leaves_no_children(kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, _, driver):
        await sup.set_desired("echo", [kit.spec("echo", "echo-0", tmp_path, health=FAST_HEALTH)])
        await eventually(all_healthy(sup, 1), timeout_s=60)
        handle = sup.status()[0].handle
        await driver.stop("echo-0", timeout_s=5)
        assert not (await driver.list_owned())["echo-0"].alive
        assert (await driver.list_owned())["echo-0"].exit_code == 0  # the SDK drains on SIGTERM and exits 0
        await sup.set_desired("echo", [])
        await wait_none_owned(driver)
        assert not await kit.exists(handle)


_FIRST_DAEMON = r'''
import asyncio, json, sys
from pathlib import Path
from runtime.client import InstanceClient
from runtime.drivers.process import ProcessDriver
from runtime.spec import InstanceSpec
from runtime.supervisor import Supervisor, SupervisorConfig

async def main(data, socks, echo):
    async with ProcessDriver(Path(data), "n-restart") as d, InstanceClient() as c, \
            Supervisor(SupervisorConfig.test("n-restart", Path(data), Path(socks)), d, client=c) as sup:
        await sup.set_desired("echo", [InstanceSpec(block_id="echo", instance_id=f"e-{i}", block_dir=Path(echo))
                                       for i in range(2)])
        deadline = asyncio.get_running_loop().time() + 60
        while len(sup.healthy("echo")) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        print(json.dumps({s.instance_id: s.handle for s in sup.status() if s.state.value == "healthy"}))

asyncio.run(main(*sys.argv[1:4]))
'''


async def test_process_instances_survive_a_daemon_process_exit_and_are_adopted(
        tmp_path: Path, sock_dir: Path) -> None:
    """A real daemon restart: the first supervisor lives in another OS process that exits."""
    from tests.integration.test_runtime_support import ECHO_DIR, REPO, ProcessKit
    data = tmp_path / "d"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FIRST_DAEMON, str(data), str(sock_dir), str(ECHO_DIR), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode()
    handles = json.loads(out.decode().strip().splitlines()[-1])
    assert sorted(handles) == ["e-0", "e-1"]
    kit = ProcessKit()
    async with ProcessDriver(data, "n-restart") as driver, InstanceClient() as client, \
            Supervisor(SupervisorConfig.test("n-restart", data, sock_dir), driver, client=client) as sup:
        await eventually(lambda: len(sup.healthy("echo")) == 2, timeout_s=30)
        assert {s.instance_id: s.handle for s in sup.status()} == handles
        assert all(s.restarts == 0 for s in sup.status())
        reply = await Balancer(sup, client).submit("echo", {"session_id": "r", "seq_no": 7, "data": "[1]"})
        assert kit.echoed(reply.packets[0])["data"] == [1]
        await sup.set_desired("echo", [])
        await wait_none_owned(driver)
        for h in handles.values():
            await eventually(lambda h=h: not psutil.pid_exists(int(h)) or  # type: ignore[misc]  # default-arg capture
                             psutil.Process(int(h)).status() == psutil.STATUS_ZOMBIE, timeout_s=10)


async def test_restart_backoff_doubles_up_to_its_cap(
        tmp_path: Path, sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.supervisor")
    kit = ProcessKit()
    async with node(kit, tmp_path / "d", sock_dir, backoff_initial_s=0.1, backoff_max_s=0.8) as (sup, _, _):
        await sup.set_desired("bad", [kit.spec("bad", "bad-0", tmp_path, env={"STANDIN_EXIT_AT_ONCE": "3"},
                                               block="standin")])

        def delays() -> list[float]:
            return [float(r.__dict__["restart_in_s"]) for r in caplog.records if r.getMessage() == "instance exited"]
        await eventually(lambda: len(delays()) >= 6, timeout_s=30)
        got = delays()[:6]
        for seen, want in zip(got, [0.1, 0.2, 0.4, 0.8, 0.8, 0.8], strict=True):
            assert want - 0.15 <= seen <= want, got
        st = sup.status()[0]
        assert st.state is InstanceState.CRASHLOOP and st.restarts >= 5 and st.last_exit == 3


async def test_logs_follow_shows_new_lines(kit: DriverKit, tmp_path: Path, sock_dir: Path) -> None:
    async with node(kit, tmp_path / "d", sock_dir) as (sup, _, driver):
        await sup.set_desired("echo", [kit.spec("echo", "echo-0", tmp_path, health=FAST_HEALTH)])
        await eventually(all_healthy(sup, 1), timeout_s=60)
        assert [line async for line in sup.logs("echo-0", tail=50)]  # the SDK logged its start
        seen: list[str] = []

        async def follow() -> None:
            async for line in sup.logs("echo-0", tail=5, follow=True):
                seen.append(line)
                if "stopping" in line:
                    return
        reader = asyncio.create_task(follow())
        try:
            await driver.stop("echo-0", timeout_s=5)  # the SDK logs "instance stopping" on SIGTERM
            await asyncio.wait_for(reader, timeout=20)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        assert any("stopping" in line for line in seen), seen


async def test_desired_set_is_readable_and_survives_a_restart(tmp_path: Path, sock_dir: Path) -> None:
    """Supervisor.desired / desired_blocks: the public reader of what set_desired stored (and reloaded)."""
    kit = ProcessKit()
    spec = kit.spec("echo", "echo-0", tmp_path, block="standin", health=FAST_HEALTH)
    cfg = SupervisorConfig.test("t-desired", tmp_path / "d", sock_dir)
    async with ProcessDriver(tmp_path / "d", "t-desired") as driver, Supervisor(cfg, driver) as sup:
        await sup.set_desired("echo", [spec])
        assert sup.desired("echo") == [spec] and sup.desired("other") == [] and sup.desired_blocks() == ["echo"]
    async with ProcessDriver(tmp_path / "d", "t-desired") as driver, Supervisor(cfg, driver) as sup:
        assert sup.desired("echo") == [spec]  # loaded from the data dir before any set_desired
        await sup.set_desired("echo", [])
        assert sup.desired_blocks() == []
        await eventually(lambda: _nothing_owned(driver), timeout_s=30)


async def _nothing_owned(driver: Driver) -> bool:
    return not await driver.list_owned()
