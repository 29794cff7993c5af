"""Where the daemon reads its GPUs from: real NVML, or a fake inventory for tests.

Test seam ("hollow node", ARCHITECTURE §10): `AIOSD_TEST_GPUS=/path/gpus.json` makes the real
daemon (its runtime and its controller alike) read its GPUs through runtime.testing.FakeNvml built
from that file, a JSON list of `{"name", "uuid", "total_mb", "used_mb", "util"}`. Without it the
real NVML seam is used; no NVML = no GPUs, never a crash.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from aiosd.errors import ConfigError
from runtime.gpus import Nvml, default_nvml
from runtime.testing import FakeGpu, FakeNvml

log = logging.getLogger(__name__)
FAKE_GPUS_ENV = "AIOSD_TEST_GPUS"
# A fake inventory file is a handful of entries; refuse anything that is clearly not one.
_MAX_FAKE_BYTES = 64 << 10


def load_fake_nvml(path: Path) -> FakeNvml:
    """Read a fake GPU inventory. Raises: ConfigError naming the entry and field."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{FAKE_GPUS_ENV}: cannot read {path}: {e.strerror}") from None
    if len(raw) > _MAX_FAKE_BYTES:
        raise ConfigError(f"{FAKE_GPUS_ENV}: {path} is larger than {_MAX_FAKE_BYTES} bytes")
    try:
        items = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{FAKE_GPUS_ENV}: {path} is not JSON: {e}") from None
    if not isinstance(items, list):
        raise ConfigError(f"{FAKE_GPUS_ENV}: {path} must hold a JSON list of GPUs")
    gpus: list[FakeGpu] = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise ConfigError(f"{FAKE_GPUS_ENV}: [{i}] must be an object")
        try:
            gpus.append(FakeGpu(name=str(it.get("name", "NVIDIA Fake")), uuid=str(it.get("uuid", f"GPU-fake-{i}")),
                                total_mb=int(it["total_mb"]), used_mb=int(it.get("used_mb", 0)),
                                util=int(it.get("util", 0))))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{FAKE_GPUS_ENV}: [{i}].total_mb/used_mb/util: {e}") from None
    return FakeNvml(gpus)


def node_nvml() -> Nvml | None:
    """The NVML this daemon reads: the fake inventory named by AIOSD_TEST_GPUS, else the real one
    (None without pynvml: no GPUs).

    Raises: ConfigError for a bad fake file."""
    fake = os.environ.get(FAKE_GPUS_ENV)
    if not fake:
        return default_nvml()
    nvml = load_fake_nvml(Path(fake))
    log.info("fake GPU inventory loaded", extra={"path": fake, "gpus": nvml.nvmlDeviceGetCount()})
    return nvml


__all__ = ["FAKE_GPUS_ENV", "load_fake_nvml", "node_nvml"]
