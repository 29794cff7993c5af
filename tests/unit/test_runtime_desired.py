"""The desired-instances API body decodes into validated specs; every error names its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.desired import specs_from_request
from runtime.errors import SpecError
from runtime.spec import GpuMode


def body(**inst: Any) -> dict[str, Any]:
    base = {"instance_id": "e-0", "image": "localhost/echo:1"}
    return {"block_id": "echo", "instances": [{**base, **inst}]}


def test_full_body_decodes(tmp_path: Path) -> None:
    block_id, specs = specs_from_request(body(
        env={"A": "1"}, gpus={"count": 1, "mode": "shared", "min_free_mb": 4000},
        resources={"cpus": 1.5, "memory_mb": 512, "pids": 64},
        mounts=[{"source": str(tmp_path), "target": "/data"}],
        stabilityChecker={"parameters": {"unhealthy_threshold": 2}, "settings": {"health_check_interval": 5}},
        workers=2, queue=8))
    s = specs[0]
    assert block_id == "echo" and s.instance_id == "e-0" and s.image == "localhost/echo:1"
    assert s.gpus.mode is GpuMode.SHARED and s.gpus.min_free_mb == 4000
    assert (s.resources.cpus, s.health.interval_s, s.health.unhealthy_threshold) == (1.5, 5.0, 2)
    assert s.mounts[0].read_only


@pytest.mark.parametrize(("b", "field"), [
    ([], "body"),
    ({"instances": []}, "block_id"),
    ({"block_id": "x", "instances": [1]}, "instances[0]"),
    (body(instance_id=None), "instances[0].instance_id"),
    (body(instance_id="bad id"), "instances[0].instance_id"),
    (body(gpus={"count": True}), "instances[0].gpus.count"),
    (body(gpus={"mode": "greedy"}), "instances[0].gpus.mode"),
    (body(resources={"memory_mb": "1g"}), "instances[0].resources.memory_mb"),
    (body(mounts=[{"source": "/tmp"}]), "instances[0].mounts[0]"),
    (body(env={"A": 1}), "instances[0].env.A"),
    (body(stabilityChecker={"settings": {"health_check_interval": -1}}),
     "instances[0].stabilityChecker.settings.health_check_interval"),
    (body(colour="red"), "instances[0].colour"),
    ({"block_id": "x", "instances": [{"instance_id": str(i), "image": "i"} for i in range(300)]}, "instances"),
])
def test_bad_bodies_name_the_field(b: Any, field: str) -> None:
    with pytest.raises(SpecError) as e:
        specs_from_request(b)
    assert e.value.field == field, str(e.value)
