"""InstanceSpec validation names the bad field; specs round-trip through their stored JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from runtime.errors import SpecError
from runtime.spec import (
    GpuMode,
    GpuRequest,
    HealthSettings,
    InstanceSpec,
    Mount,
    Resources,
    spec_from_json,
    spec_to_json,
)


def good(tmp_path: Path) -> InstanceSpec:
    (tmp_path / "block.py").write_text("pass\n")
    return InstanceSpec(block_id="b1", instance_id="b1-0", block_dir=tmp_path, env={"A": "1"},
                        context={"block_init_data": {"x": 1}}, gpus=GpuRequest(count=1, mode=GpuMode.SHARED),
                        resources=Resources(cpus=0.5, memory_mb=256, pids=100),
                        mounts=(Mount(tmp_path, "/data"),), health=HealthSettings(interval_s=2))


@pytest.mark.parametrize(("change", "field"), [
    ({"block_id": "bad id"}, "block_id"),
    ({"instance_id": ""}, "instance_id"),
    ({"block_dir": None, "image": None}, "image"),
    ({"image": "has space"}, "image"),
    ({"env": {"1BAD": "x"}}, "env.1BAD"),
    ({"env": {"AIOSD_INSTANCE_SOCKET": "/x"}}, "env.AIOSD_INSTANCE_SOCKET"),
    ({"context": {"x": object()}}, "context"),
    ({"gpus": GpuRequest(count=-1)}, "gpus.count"),
    ({"gpus": GpuRequest(count=2, ids=("0",))}, "gpus.count"),
    ({"resources": Resources(cpus=0)}, "resources.cpus"),
    ({"resources": Resources(memory_mb=1)}, "resources.memory_mb"),
    ({"resources": Resources(pids=0)}, "resources.pids"),
    ({"mounts": (Mount(Path("relative"), "/x"),)}, "mounts[0].source"),
    ({"mounts": (Mount(Path("/"), "/run/aiosd"),)}, "mounts[0].target"),
    ({"health": HealthSettings(interval_s=0)}, "health.interval_s"),
    ({"health": HealthSettings(unhealthy_threshold=0)}, "health.unhealthy_threshold"),
    ({"queue": 0}, "queue"),
])
def test_bad_field_is_named(tmp_path: Path, change: dict[str, object], field: str) -> None:
    spec = replace(good(tmp_path), **change)  # type: ignore[arg-type]  # table of field overrides
    with pytest.raises(SpecError) as e:
        spec.validate()
    assert e.value.field == field
    assert str(e.value).startswith(field + ":")


def test_missing_block_py_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="block_dir: .*block.py does not exist"):
        InstanceSpec(block_id="b", instance_id="i", block_dir=tmp_path / "nope").validate()


def test_good_spec_validates_and_round_trips(tmp_path: Path) -> None:
    s = good(tmp_path)
    s.validate()
    back = spec_from_json(spec_to_json(s))
    assert back == s
    assert back.digest() == s.digest()
    assert replace(s, env={"A": "2"}).digest() != s.digest()


def test_malformed_stored_spec_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="malformed"):
        spec_from_json({"block_id": "x"})


def test_health_from_aios_stability_checker() -> None:
    # reference/aios.md: parameters.unhealthy_threshold, settings.health_check_interval
    h = HealthSettings.from_policy({"unhealthy_threshold": 3}, {"health_check_interval": 15})
    assert (h.interval_s, h.unhealthy_threshold) == (15.0, 3)
    assert HealthSettings.from_policy({}, {}).interval_s == 30.0
    with pytest.raises(SpecError, match="health_check_interval"):
        HealthSettings.from_policy({}, {"health_check_interval": "15"})
    with pytest.raises(SpecError, match="unhealthy_threshold"):
        HealthSettings.from_policy({"unhealthy_threshold": 0}, {})
