"""A block the controller places autoscales (issue 17, part 4), three real daemons in one cluster.

Under load the leader's autoscaler takes it from 1 to its max of 3 instances over the nodes and,
once the load stops, back to 1. Then load again: right after the first scale-up the leader is
killed with SIGKILL; the new leader honours the committed cooldown (no second scale-up inside it).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from aiosd.client import Client
from tests.daemons import Daemon
from tests.e2e.test_main_job import SLOW_BLOCK
from tests.integration.test_controller_daemons import (
    SPREAD,
    ctl,
    leader_of,
    node_id,
    placements,
    start_cluster,
)
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
COOLDOWN_S = 8.0


def slow_cluster_docs(tmp_path: Path) -> Path:
    bdir = tmp_path / "slow"
    bdir.mkdir(exist_ok=True)
    (bdir / "block.py").write_text(SLOW_BLOCK)
    comp = json.loads((ROOT / "examples/echo/component.json").read_text())
    v = comp["body"]["spec"]["values"]
    v["componentId"]["name"] = "slow"
    v["containerRegistryInfo"]["containerImage"] = "localhost/aiosd-slow:latest"
    v["componentMetadata"]["blockDir"] = str(bdir)
    v["componentInputProtocol"] = {}
    block = json.loads((ROOT / "examples/echo/block.json").read_text())
    b = block["body"]["spec"]["values"]
    b.update(blockId="cslow", blockComponentURI="model.slow:1.0.0-stable", minInstances=1, maxInstances=3)
    b["policyRulesSpec"] = [
        {"values": {"name": "resourceAllocator", "policyRuleURI": SPREAD["uri"], "parameters": SPREAD["parameters"],
                    "settings": SPREAD["settings"]}},
        {"values": {"name": "autoscaler", "policyRuleURI": "policy.autoscaler.queue:v1", "parameters": {"max_queue": 2},
                    "settings": {"intervalSeconds": 0.5, "scale_up_cooldown": COOLDOWN_S, "scale_down_cooldown": 2}}}]
    path = tmp_path / "cslow.json"
    path.write_text(json.dumps(comp) + "\n" + json.dumps(block))
    return path


async def _load(d: Daemon, stop: asyncio.Event, workers: int = 10) -> None:
    async with Client(d.socket, timeout_s=60) as c:
        async def one() -> None:
            while not stop.is_set():
                try:
                    await c.post("/v1/infer/block/cslow", {"data": {"work_s": 0.3}})
                except Exception:  # noqa: BLE001 (a killed leader's node or a moved instance: keep loading)
                    await asyncio.sleep(0.2)
        await asyncio.gather(*(one() for _ in range(workers)))


class Loader:
    """Load from one daemon in a background thread's event loop (bounded by stop())."""

    def __init__(self, d: Daemon, workers: int = 10) -> None:
        import threading
        self.stop_ev: asyncio.Event | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(d, workers),), daemon=True)
        self.thread.start()

    async def _run(self, d: Daemon, workers: int) -> None:
        self.stop_ev = asyncio.Event()
        await _load(d, self.stop_ev, workers)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.stop_ev.set() if self.stop_ev is not None else None)
        self.thread.join(timeout=90)
        if not self.thread.is_alive():
            self.loop.close()


def test_cluster_block_autoscales_and_survives_a_leader_kill(tmp_path: Path, daemons: list[Daemon]) -> None:
    nodes = start_cluster(tmp_path, daemons, 3)
    follower = next(d for d in nodes if ctl(d)["role"] != "leader")
    r = follower.cli("apply", "-f", str(slow_cluster_docs(tmp_path)), "--cluster", "--json")
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: len(placements(follower, "cslow")) == 1, timeout_s=20, interval_s=0.2)
    time.sleep(2)  # the first instance starts
    seen: set[int] = set()

    def count(d: Daemon) -> int:
        n = len(placements(d, "cslow"))
        seen.add(n)
        return n

    loader = Loader(follower)
    try:
        wait_sync(lambda: count(follower) == 3, timeout_s=90, interval_s=0.2)
    finally:
        loader.stop()
    assert len(set(placements(follower, "cslow").values())) >= 2  # across nodes
    wait_sync(lambda: count(follower) == 1, timeout_s=60, interval_s=0.2)
    assert seen <= {1, 2, 3}
    # Load for 2 instances; right after that scale-up, more load (for 3) and kill -9 the leader.
    time.sleep(COOLDOWN_S)  # the first round's upscale cooldown is over
    leader = leader_of(nodes)
    survivors = [d for d in nodes if d is not leader]
    loaders = [Loader(survivors[0], workers=3)]
    try:
        wait_sync(lambda: count(survivors[0]) == 2, timeout_s=60, interval_s=0.1)
        t_up = time.monotonic()
        leader.kill9()
        loaders.append(Loader(survivors[1], workers=8))
        new = wait_sync(lambda: next((d for d in survivors if ctl(d)["role"] == "leader"
                                      and ctl(d)["leader"] != node_id(leader)), None), timeout_s=30, interval_s=0.2)
        assert new is not None
        # Inside the committed cooldown the new leader does not scale up again, though the load asks for it.
        while time.monotonic() - t_up < COOLDOWN_S - 1.5:
            assert len(placements(new, "cslow")) == 2
            time.sleep(0.2)
        # After it, the new leader scales up: its autoscaler runs.
        wait_sync(lambda: count(new) == 3, timeout_s=60, interval_s=0.2)
    finally:
        for ld in loaders:
            ld.stop()
