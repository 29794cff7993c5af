"""What the runtime is asked to run (InstanceSpec) and what it reports (InstanceStatus).

Plain frozen values with validation that names the bad field; no IO here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from runtime.errors import SpecError

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Bounds that keep a spec from asking for the absurd; each says why in its error.
MAX_ENV = 256
MAX_MOUNTS = 64
MAX_CONTEXT_BYTES = 1 << 20  # the context travels in an environment variable


class InstanceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    CRASHLOOP = "crashloop"
    STOPPED = "stopped"
    FAILED = "failed"


class GpuMode(StrEnum):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: float | None = None
    memory_mb: int | None = None
    pids: int | None = None


@dataclass(frozen=True, slots=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """`count` GPUs (or the exact `ids`: uuids or indices), exclusive or shared, each with min free memory."""

    count: int = 0
    ids: tuple[str, ...] = ()
    mode: GpuMode = GpuMode.EXCLUSIVE
    min_free_mb: int = 0

    @property
    def wanted(self) -> int:
        return len(self.ids) if self.ids else self.count


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """The block's `stabilityChecker` knobs (AIOS: settings.health_check_interval, parameters.unhealthy_threshold)."""

    interval_s: float = 30.0
    unhealthy_threshold: int = 3
    timeout_s: float = 5.0
    start_timeout_s: float = 60.0  # from start to the first healthy answer

    @classmethod
    def from_policy(cls, parameters: Mapping[str, Any], settings: Mapping[str, Any]) -> HealthSettings:
        """Read the AIOS stabilityChecker entry; unknown keys are ignored, bad values raise SpecError."""
        interval = settings.get("health_check_interval", 30)
        threshold = parameters.get("unhealthy_threshold", 3)
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or not 0 < interval <= 3600:
            raise SpecError("stabilityChecker.settings.health_check_interval", "must be a number in (0, 3600]")
        if not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= 100:
            raise SpecError("stabilityChecker.parameters.unhealthy_threshold", "must be an integer in [1, 100]")
        return cls(interval_s=float(interval), unhealthy_threshold=threshold)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One instance to run. Exactly one of `image` (container) or `block_dir` (process, or mounted
    into `image`) must say where the code is; the process driver needs `block_dir`."""

    block_id: str
    instance_id: str
    image: str | None = None
    block_dir: Path | None = None
    command: tuple[str, ...] = ()  # () = the driver's default (`python3 block.py`)
    env: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    gpus: GpuRequest = GpuRequest()
    resources: Resources = Resources()
    mounts: tuple[Mount, ...] = ()
    health: HealthSettings = HealthSettings()
    workers: int | None = None
    queue: int | None = None

    def validate(self) -> None:
        """Raise SpecError naming the first bad field."""
        for name in ("block_id", "instance_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID_RE.match(value):
                raise SpecError(name, f"{value!r} must be 1-128 of [A-Za-z0-9_.-], starting alphanumeric")
        if self.image is None and self.block_dir is None:
            raise SpecError("image", "an instance needs an image or a block_dir")
        if self.image is not None and (not self.image or any(c.isspace() for c in self.image)):
            raise SpecError("image", f"{self.image!r} is not an image name")
        if self.block_dir is not None and not (Path(self.block_dir) / "block.py").is_file():
            raise SpecError("block_dir", f"{self.block_dir}/block.py does not exist")
        if len(self.env) > MAX_ENV:
            raise SpecError("env", f"at most {MAX_ENV} variables")
        for k, v in self.env.items():
            if not isinstance(k, str) or not _ENV_RE.match(k):
                raise SpecError(f"env.{k}", "is not a valid variable name")
            if not isinstance(v, str) or "\0" in v:
                raise SpecError(f"env.{k}", "must be a string without NUL")
            if k.startswith("AIOSD_INSTANCE_"):
                raise SpecError(f"env.{k}", "AIOSD_INSTANCE_* is set by the runtime")
        try:
            size = len(json.dumps(dict(self.context)))
        except (TypeError, ValueError) as e:
            raise SpecError("context", f"must be JSON-serialisable ({e})") from None
        if size > MAX_CONTEXT_BYTES:
            raise SpecError("context", f"is {size} bytes as JSON; at most {MAX_CONTEXT_BYTES}")
        g = self.gpus
        if g.count < 0 or g.count > 64:
            raise SpecError("gpus.count", "must be in [0, 64]")
        if g.ids and g.count not in (0, len(g.ids)):
            raise SpecError("gpus.count", "must match len(gpus.ids) when ids are given")
        if g.min_free_mb < 0:
            raise SpecError("gpus.min_free_mb", "must be >= 0")
        r = self.resources
        if r.cpus is not None and not (isinstance(r.cpus, (int, float)) and 0 < r.cpus <= 1024
                                       and math.isfinite(r.cpus)):
            raise SpecError("resources.cpus", "must be a number in (0, 1024]")
        if r.memory_mb is not None and not (isinstance(r.memory_mb, int) and 6 <= r.memory_mb <= 1 << 24):
            raise SpecError("resources.memory_mb", "must be an integer in [6, 16777216]")
        if r.pids is not None and not (isinstance(r.pids, int) and 1 <= r.pids <= 1 << 22):
            raise SpecError("resources.pids", "must be an integer in [1, 4194304]")
        if len(self.mounts) > MAX_MOUNTS:
            raise SpecError("mounts", f"at most {MAX_MOUNTS}")
        for i, m in enumerate(self.mounts):
            if not Path(m.source).is_absolute() or not Path(m.source).exists():
                raise SpecError(f"mounts[{i}].source", f"{m.source} must be an existing absolute path")
            if not m.target.startswith("/") or m.target in ("/", "/run/aiosd"):
                raise SpecError(f"mounts[{i}].target", f"{m.target!r} must be an absolute path other than / "
                                "and /run/aiosd")
        h = self.health
        if not 0 < h.interval_s <= 3600:
            raise SpecError("health.interval_s", "must be in (0, 3600]")
        if not 1 <= h.unhealthy_threshold <= 100:
            raise SpecError("health.unhealthy_threshold", "must be in [1, 100]")
        if not 0 < h.timeout_s <= 300 or not 0 < h.start_timeout_s <= 3600:
            raise SpecError("health.timeout_s", "timeouts must be positive and bounded")
        for name in ("workers", "queue"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and 1 <= v <= 100_000):
                raise SpecError(name, "must be an integer in [1, 100000]")

    def digest(self) -> str:
        """A stable hash of the spec: a changed digest means the instance must be replaced."""
        return hashlib.sha256(json.dumps(spec_to_json(self), sort_keys=True).encode()).hexdigest()[:16]


def spec_to_json(s: InstanceSpec) -> dict[str, Any]:
    return {
        "block_id": s.block_id, "instance_id": s.instance_id, "image": s.image,
        "block_dir": str(s.block_dir) if s.block_dir is not None else None,
        "command": list(s.command), "env": dict(s.env), "context": dict(s.context),
        "gpus": {"count": s.gpus.count, "ids": list(s.gpus.ids), "mode": s.gpus.mode.value,
                 "min_free_mb": s.gpus.min_free_mb},
        "resources": {"cpus": s.resources.cpus, "memory_mb": s.resources.memory_mb, "pids": s.resources.pids},
        "mounts": [{"source": str(m.source), "target": m.target, "read_only": m.read_only} for m in s.mounts],
        "health": {"interval_s": s.health.interval_s, "unhealthy_threshold": s.health.unhealthy_threshold,
                   "timeout_s": s.health.timeout_s, "start_timeout_s": s.health.start_timeout_s},
        "workers": s.workers, "queue": s.queue,
    }


def spec_from_json(d: Mapping[str, Any]) -> InstanceSpec:
    """Inverse of spec_to_json. Raises SpecError on a malformed document."""
    try:
        g, r, h = d["gpus"], d["resources"], d["health"]
        return InstanceSpec(
            block_id=d["block_id"], instance_id=d["instance_id"], image=d["image"],
            block_dir=Path(d["block_dir"]) if d["block_dir"] is not None else None,
            command=tuple(d["command"]), env=dict(d["env"]), context=dict(d["context"]),
            gpus=GpuRequest(count=g["count"], ids=tuple(g["ids"]), mode=GpuMode(g["mode"]),
                            min_free_mb=g["min_free_mb"]),
            resources=Resources(cpus=r["cpus"], memory_mb=r["memory_mb"], pids=r["pids"]),
            mounts=tuple(Mount(Path(m["source"]), m["target"], m["read_only"]) for m in d["mounts"]),
            health=HealthSettings(**h), workers=d["workers"], queue=d["queue"])
    except (KeyError, TypeError, ValueError) as e:
        raise SpecError("spec", f"malformed stored spec ({e!r})") from None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an instance serves its task API: a unix socket (preferred) or 127.0.0.1:port."""

    socket: Path | None = None
    port: int | None = None

    def describe(self) -> str:
        return f"unix:{self.socket}" if self.socket is not None else f"127.0.0.1:{self.port}"


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int
    uuid: str


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One row of `aiosd ps`."""

    block_id: str
    instance_id: str
    state: InstanceState
    restarts: int
    last_exit: int | None
    last_log_lines: tuple[str, ...]
    started_at: float | None  # wall clock (time.time()) of the current run
    endpoint: Endpoint | None
    gpus: tuple[GpuDevice, ...] = ()
    driver: str = ""
    handle: str = ""  # pid or container id
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id, "instance_id": self.instance_id, "state": self.state.value,
            "restarts": self.restarts, "last_exit": self.last_exit, "last_log_lines": list(self.last_log_lines),
            "started_at": self.started_at,
            "endpoint": self.endpoint.describe() if self.endpoint is not None else None,
            "gpus": [{"index": g.index, "uuid": g.uuid} for g in self.gpus],
            "driver": self.driver, "handle": self.handle, "error": self.error,
        }
