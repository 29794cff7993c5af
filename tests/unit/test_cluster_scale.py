"""The committed autoscale decision and its cooldown (aiosd.blocks.cluster_scale)."""

from __future__ import annotations

import json

from aiosd.blocks.cluster_scale import committed_decision, cooling
from aiosd.controller.state import Task


def _task(bid: str, detail: dict[str, object] | str) -> Task:
    return Task(f"autoscale/{bid}", "autoscale", "running", detail if isinstance(detail, str) else json.dumps(detail), 1, 1)


def test_the_last_committed_decision_of_the_block_counts() -> None:
    tasks = [_task("a", {"op": "upscale", "at": 1.0}), _task("b", {"op": "downscale", "at": 2.0}),
             _task("a", {"op": "upscale", "at": 3.0}), _task("c", "not json")]
    assert committed_decision(tasks, "a") == {"op": "upscale", "at": 3.0}
    assert committed_decision(tasks, "c") is None and committed_decision(tasks, "zz") is None


def test_cooldowns_from_the_committed_time() -> None:
    up = {"op": "upscale", "at": 100.0}
    params = {"scale_up_cooldown": 8, "scale_down_cooldown": 2}
    assert cooling(up, "upscale", params, 105.0) and not cooling(up, "upscale", params, 108.5)
    assert cooling(up, "downscale", params, 101.0) and not cooling(up, "downscale", params, 102.5)
    down = {"op": "downscale", "at": 100.0}
    assert not cooling(down, "upscale", params, 100.1)  # an upscale right after a downscale is fine
    assert not cooling(None, "upscale", params, 0.0) and cooling(up, "upscale", {}, 120.0)  # default 30 s
