"""Every runtime module imports on its own; the public surface is pinned; GPU device mapping."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from runtime.drivers.podman import gpu_devices, nvidia_cdi_present
from runtime.spec import GpuDevice

MODULES = sorted(m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime."))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_alone(name: str) -> None:
    r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60, check=False,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr


def test_public_surface_is_pinned() -> None:
    assert set(runtime.__all__) == {
        "BASE_LATEST", "AiosdRuntimeError", "Balancer", "BaseRecipe", "Driver", "DriverError", "DriverUnavailable",
        "Endpoint", "GpuBook", "GpuDevice", "GpuError", "GpuInfo", "GpuInventory", "GpuMetrics", "GpuMode",
        "GpuRequest", "GpuUnavailable", "HealthSettings", "ImageBuildError", "ImageNotFound", "InstanceBusy",
        "InstanceClient", "InstanceNotFound", "InstanceSource", "InstanceSpec", "InstanceStartError",
        "InstanceState", "InstanceStatus", "Mount", "NoGpuError", "NoHealthyInstance", "Observed", "PodmanCli",
        "PodmanDriver", "ProcessDriver", "Resources", "SpecError", "Supervisor", "SupervisorConfig", "TaskError",
        "TaskFailed", "TaskReply", "build_base", "build_block", "debian_mirror", "default_nvml", "image_exists",
        "open_driver", "specs_from_request", "NodeMetrics", "acollect"}
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None
    assert importlib.import_module("runtime.testing").STANDIN_BLOCK


def test_gpus_go_by_cdi_name_when_a_spec_exists(tmp_path: Path) -> None:
    gpus = (GpuDevice(1, "GPU-b"),)
    assert gpu_devices(gpus, cdi=True) == ["nvidia.com/gpu=1"]
    assert gpu_devices((), cdi=True) == []
    assert all(d.startswith("/dev/nvidia") for d in gpu_devices(gpus, cdi=False))
    assert not nvidia_cdi_present((tmp_path,))
    (tmp_path / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n")
    assert nvidia_cdi_present((tmp_path, tmp_path / "missing"))


def test_follow_catch_up_resumes_after_the_last_seen_lines() -> None:
    from runtime.drivers.podman import _after
    assert _after(["a", "b"], ("x", "a", "b", "c", "d")) == ["c", "d"]
    assert _after(["b", "a", "b"], ("a", "b", "a", "b", "e")) == ["e"]  # longest matching suffix wins
    assert _after([], ("a", "b")) == ["a", "b"]
    assert _after(["zzz"], ("a", "b")) == []  # lost track: give nothing twice
