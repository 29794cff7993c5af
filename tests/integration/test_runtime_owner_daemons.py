"""Issue 18 items 10 and 12 with real `aiosd run` daemons: two daemons on one host run the same block
(same instance ids) without touching each other; a daemon killed with SIGKILL whose data dir is then
removed leaves instances that the next daemon to start stops, and a live daemon keeps its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
import pytest

from tests.daemons import Daemon, cli
from tests.instances import remove_node_containers
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo"


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def infer_ok(d: Daemon, message: str) -> bool:
    r = d.cli("infer", "echo-1", "--data", json.dumps({"message": message}), "--json")
    return r.returncode == 0 and json.loads(r.stdout)["outputs"][0]["data"] == {"message": message}


def instances(d: Daemon) -> list[dict[str, object]]:
    got: list[dict[str, object]] = d.json("ps")["instances"]
    return got


@pytest.fixture
def podman_nodes(daemons: list[Daemon]) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for d in daemons:  # stopped first: a running supervisor would start what is removed again
        d.stop()
    for nid in ids:
        remove_node_containers(nid)


@pytest.mark.podman
@pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                    reason="podman and runc are not installed (apt-get install podman runc)")
def test_two_podman_daemons_on_one_host_run_the_same_block(daemons: list[Daemon], podman_nodes: list[str],
                                                           tmp_path: Path) -> None:
    base = cli("image", "build-base", "--data-dir", str(tmp_path / "img"), "--json", timeout_s=900)
    if base.returncode != 0:
        pytest.skip(f"the base image cannot be built here: {base.stderr.strip()[-300:]}")
    nodes = [Daemon(tmp_path, f"p{i}", extra=["--driver", "podman"]).start(timeout_s=60) for i in (1, 2)]
    daemons.extend(nodes)
    podman_nodes.extend(d.json("status")["node_id"] for d in nodes)
    for d in nodes:  # the second apply used to force-remove the first daemon's aiosd-echo-1-... container
        r = d.cli("apply", "-f", str(ECHO), timeout_s=600)
        assert r.returncode == 0 and "1/1 healthy" in r.stdout, r.stderr + d.logs()[-3000:]
    handles = [instances(d)[0]["handle"] for d in nodes]
    assert handles[0] != handles[1]
    deadline = time.monotonic() + 5  # several supervisor ticks of both daemons
    while time.monotonic() < deadline:
        for d in nodes:
            (inst,) = instances(d)
            assert inst["restarts"] == 0 and inst["state"] == "healthy", inst
        time.sleep(0.5)
    assert all(infer_ok(d, f"from {d.name}") for d in nodes)
    assert nodes[1].cli("delete", "block", "echo-1", timeout_s=120).returncode == 0
    wait_sync(lambda: instances(nodes[1]) == [], timeout_s=60)
    (inst,) = instances(nodes[0])
    assert inst["handle"] == handles[0] and inst["state"] == "healthy"
    assert infer_ok(nodes[0], "still here")
    r = subprocess.run(["podman", "inspect", "-f", "{{.State.Running}}", str(handles[0])], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.stdout.strip() == "true"


def test_killed_daemon_with_its_data_dir_gone_leaves_nothing_behind(daemons: list[Daemon], tmp_path: Path) -> None:
    dead, live = Daemon(tmp_path, "dead").start(timeout_s=60), Daemon(tmp_path, "live").start(timeout_s=60)
    daemons.extend([dead, live])
    for d in (dead, live):
        r = d.cli("apply", "-f", str(ECHO), timeout_s=300)
        assert r.returncode == 0 and "1/1 healthy" in r.stdout, r.stderr + d.logs()[-3000:]
    dead_pid, live_pid = (int(str(instances(d)[0]["handle"])) for d in (dead, live))
    dead.kill9()
    time.sleep(0.5)
    assert alive(dead_pid)  # SIGKILL leaves the instance for the next start to adopt
    shutil.rmtree(dead.data_dir)  # ... but nobody will: its data dir is gone

    other = Daemon(tmp_path, "other").start(timeout_s=60)
    daemons.append(other)
    wait_sync(lambda: not alive(dead_pid), timeout_s=15)
    assert alive(live_pid)
    (inst,) = instances(live)
    assert inst["handle"] == str(live_pid) and inst["restarts"] == 0
    assert infer_ok(live, "untouched")
    assert "reaping an orphan" in other.logs()
