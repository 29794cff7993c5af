"""Assets and images between three real daemons joined with a token (127.0.0.2..4, loopback only).

An asset pushed on one node is fetched and verified on another; corrupted chunks (served by a
holder with AIOSD_TEST_FAULTS=1) are detected and fetched again; a holder killed mid-transfer
does not fail the fetch while another holder exists; a podman image travels as an asset.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosd.client import Client
from tests.daemons import Daemon, cli
from tests.waiting import wait_sync

pytestmark = [pytest.mark.timeout(120), pytest.mark.keeps_processes]
ENV = {"AIOSD_REPLICATION_PROFILE": "test", "AIOSD_MEMBERSHIP_PROFILE": "test", "AIOSD_TEST_FAULTS": "1"}
CHUNK = 64 * 1024


def _api(d: Daemon, method: str, path: str, body: Any = None) -> Any:
    async def go() -> Any:
        async with Client(d.socket, timeout_s=30) as c:
            return await c.request(method, path, body)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Daemon]]:
    root = tmp_path_factory.mktemp("assets")
    nodes: list[Daemon] = []
    try:
        first = Daemon(root, "n1", p2p_host="127.0.0.2", env=ENV).start()
        nodes.append(first)
        tok = json.loads(first.cli("token", "create", "--json", "--uses", "2", "--ttl", "10m").stdout)["token"]
        for i in (2, 3):
            j = cli("join", tok, "--data-dir", str(root / f"n{i}"), "--json")
            assert j.returncode == 0, j.stderr
            nodes.append(Daemon(root, f"n{i}", p2p_host=f"127.0.0.{i + 1}", env=ENV).start())
        ids = {d.json("status")["node_id"] for d in nodes}

        def all_alive(d: Daemon) -> bool:
            return {x["node_id"] for x in d.json("nodes")["nodes"] if x["state"] == "alive"} == ids

        for d in nodes:
            wait_sync(functools.partial(all_alive, d), timeout_s=20, interval_s=0.2)
        yield nodes
    finally:
        for d in nodes:
            d.stop()


def _node_id(d: Daemon) -> str:
    return str(d.json("status")["node_id"])


def _push(d: Daemon, tmp: Path, uri: str, size: int) -> tuple[Path, str]:
    src = tmp / uri.replace("/", "_").replace(":", "_")
    src.write_bytes(os.urandom(size))
    r = d.cli("asset", "push", str(src), "--uri", uri, "--chunk-bytes", str(CHUNK), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    return src, rec["sha256"]


def _visible(d: Daemon, uri: str) -> dict[str, Any]:
    def seen() -> Any:
        return next((i for i in d.json("asset", "list") if i["uri"] == uri), None)

    found: dict[str, Any] = wait_sync(seen, timeout_s=15, interval_s=0.2)
    return found


def _get(d: Daemon, uri: str, out: Path) -> dict[str, Any]:
    r = d.cli("asset", "get", uri, "-o", str(out), "--json", timeout_s=60)
    assert r.returncode == 0, r.stderr + d.logs()[-3000:]
    job: dict[str, Any] = json.loads(r.stdout)
    return job


def _faults(d: Daemon, **kw: Any) -> Any:
    return _api(d, "POST", "/v1/assets/_faults", {"corrupt_next": 0, "delay_s": 0.0, **kw})


def test_asset_pushed_on_one_node_is_fetched_and_verified_on_another(net: list[Daemon], tmp_path: Path) -> None:
    n1, n2, _ = net
    src, sha = _push(n1, tmp_path, "t/plain:1", 3 * 2**20 + 17)
    assert _visible(n2, "t/plain:1")["local"] is False
    out = tmp_path / "plain.out"
    job = _get(n2, "t/plain:1", out)
    assert out.read_bytes() == src.read_bytes()
    assert job["sha256"] == sha and job["corrupt"] == 0
    assert job["per_holder"] == {_node_id(n1): 49}  # 3 MiB + 17 B in 64 KiB chunks
    n2_id = _node_id(n2)
    wait_sync(lambda: n2_id in _visible(n1, "t/plain:1")["holders"], timeout_s=15, interval_s=0.2)
    served = _faults(n1)["served_chunks"]
    again = _get(n2, "t/plain:1", tmp_path / "plain.again")  # already local: no transfer
    assert again["state"] == "done" and (tmp_path / "plain.again").read_bytes() == src.read_bytes()
    assert _faults(n1)["served_chunks"] == served


def test_unknown_asset_is_a_clear_error(net: list[Daemon], tmp_path: Path) -> None:
    r = net[1].cli("asset", "get", "t/nope:1", "-o", str(tmp_path / "x"))
    assert r.returncode != 0 and "no asset t/nope:1" in r.stderr
    assert not (tmp_path / "x").exists()


def test_corrupted_chunks_are_detected_and_fetched_again(net: list[Daemon], tmp_path: Path) -> None:
    n1, n2, n3 = net
    # One holder: the corrupt chunks are asked again of the same holder (the damage was in transit).
    src, sha = _push(n1, tmp_path, "t/corrupt:1", 2 * 2**20)
    _visible(n2, "t/corrupt:1")
    _faults(n1, corrupt_next=2)
    job = _get(n2, "t/corrupt:1", tmp_path / "c2.out")
    assert job["corrupt"] == 2 and (tmp_path / "c2.out").read_bytes() == src.read_bytes()
    # Two holders: n1 keeps serving corrupt chunks, is dropped after 3, and n2 serves the rest.
    n2_id = _node_id(n2)
    wait_sync(lambda: n2_id in _visible(n3, "t/corrupt:1")["holders"], timeout_s=15, interval_s=0.2)
    _faults(n1, corrupt_next=1000)
    try:
        job = _get(n3, "t/corrupt:1", tmp_path / "c3.out")
    finally:
        _faults(n1)
    # Dropped after its 3rd corrupt chunk; up to 3 more already in flight (window 4) arrive corrupt too.
    assert 3 <= job["corrupt"] <= 6, job
    assert job["per_holder"] == {n2_id: 32}, job
    assert (tmp_path / "c3.out").read_bytes() == src.read_bytes()
    assert hashlib.sha256((tmp_path / "c3.out").read_bytes()).hexdigest() == sha


@pytest.mark.podman
def test_image_pushed_on_one_node_is_pulled_and_loaded_on_another(net: list[Daemon], tmp_path: Path) -> None:
    from runtime.podman_conf import podman_env, write_containers_conf
    from tests.integration.test_runtime_support import CACHE, podman_usable

    why = podman_usable()
    if why:
        pytest.skip(why)
    if not Path("/bin/busybox").is_file():
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    env = podman_env(write_containers_conf(CACHE))
    name = f"localhost/aiosd-asset-test:{os.getpid()}"
    ctx = tmp_path / "bb"
    ctx.mkdir()
    (ctx / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (ctx / "Containerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n')

    def podman(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, env=env, check=False)

    built = podman("build", "-q", "-t", name, str(ctx))
    if built.returncode != 0:
        pytest.skip(f"podman build does not work here: {built.stderr[-300:]}")
    n1, n2, _ = net
    try:
        r = n1.cli("image", "push", name, "--json", timeout_s=120)
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)
        assert rec["uri"] == f"image:{name}" and rec["size"] > 1 << 20
        assert podman("rmi", "-f", name).returncode == 0  # the nodes share podman storage: forget it here
        assert podman("image", "exists", name).returncode != 0
        wait_sync(lambda: any(i["name"] == name for i in n2.json("image", "published")), timeout_s=15,
                  interval_s=0.2)
        r = n2.cli("image", "pull", name, "--json", timeout_s=120)
        assert r.returncode == 0, r.stderr + n2.logs()[-2000:]
        pulled = json.loads(r.stdout)
        assert pulled["loaded"] and pulled["sha256"] == rec["sha256"]
        assert pulled["fetch"]["per_holder"] == {_node_id(n1): pulled["fetch"]["chunks_total"]}
        assert podman("image", "exists", name).returncode == 0
        r = n2.cli("image", "pull", "localhost/never-pushed:1")
        assert r.returncode != 0 and "was published" in r.stderr
    finally:
        podman("rmi", "-f", name)


def test_a_fetch_cut_by_kill9_of_the_fetching_daemon_resumes_after_restart(
        net: list[Daemon], tmp_path: Path) -> None:
    n1, _, n3 = net
    src, sha = _push(n1, tmp_path, "t/resume:1", 3 * 2**20)  # 48 chunks
    _visible(n3, "t/resume:1")
    _faults(n1, delay_s=0.1)  # one holder, 4 requests in flight: ~40 chunks/s
    try:
        _api(n3, "POST", "/v1/assets/fetch", {"uri": "t/resume:1"})
        wait_sync(lambda: _api(n3, "GET", f"/v1/assets/fetches/{sha}")["chunks_done"] >= 12, timeout_s=20,
                  interval_s=0.05)
        n3.kill9()
        part = n3.data_dir / "blobs" / "partial" / f"{sha}.part"
        marks = part.with_suffix(".have").read_bytes()
        assert part.exists() and 12 <= sum(marks) < 48, sum(marks)
        n3.start()
        _visible(n3, "t/resume:1")
        job = _get(n3, "t/resume:1", tmp_path / "resumed.out")
    finally:
        _faults(n1)
    assert job["state"] == "done" and job["resumed_chunks"] >= 12, job
    assert job["per_holder"][_node_id(n1)] == 48 - job["resumed_chunks"]  # only the rest travelled
    assert (tmp_path / "resumed.out").read_bytes() == src.read_bytes()
    assert not part.exists() and not part.with_suffix(".have").exists()
    ids = {_node_id(d) for d in net}
    for d in net:  # the next test needs everyone alive again
        def all_alive(d: Daemon = d) -> bool:
            return {x["node_id"] for x in d.json("nodes")["nodes"] if x["state"] == "alive"} == ids

        wait_sync(all_alive, timeout_s=20, interval_s=0.2)


def test_holder_killed_mid_transfer_does_not_fail_the_fetch(net: list[Daemon], tmp_path: Path) -> None:
    """Runs last in this module: it kills n2."""
    n1, n2, n3 = net
    src, sha = _push(n1, tmp_path, "t/kill:1", 3 * 2**20)  # 48 chunks
    _visible(n2, "t/kill:1")
    _get(n2, "t/kill:1", tmp_path / "k2.out")
    n1_id, n2_id = _node_id(n1), _node_id(n2)
    wait_sync(lambda: n2_id in _visible(n3, "t/kill:1")["holders"], timeout_s=15, interval_s=0.2)
    for d in (n1, n2):
        _faults(d, delay_s=0.2)  # slow holders: ~8 chunks per 0.2 s from both
    try:
        job = _api(n3, "POST", "/v1/assets/fetch", {"uri": "t/kill:1"})

        def progressed() -> Any:
            j = _api(n3, "GET", f"/v1/assets/fetches/{sha}")
            return j if j["per_holder"].get(n2_id, 0) >= 4 else None

        mid = wait_sync(progressed, timeout_s=20, interval_s=0.05)
        assert mid["state"] == "running" and mid["chunks_done"] < 40, mid
        n2.kill9()
        job = wait_sync(lambda: (j := _api(n3, "GET", f"/v1/assets/fetches/{sha}"))["state"] != "running" and j,
                        timeout_s=30, interval_s=0.1)
    finally:
        _faults(n1)
    assert job["state"] == "done", job
    assert job["per_holder"][n1_id] > 0 and job["per_holder"][n2_id] > 0
    assert job["errors"] >= 1
    out = tmp_path / "k3.out"
    _get(n3, "t/kill:1", out)
    assert out.read_bytes() == src.read_bytes()
