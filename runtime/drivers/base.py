"""The Driver protocol: how the supervisor starts, watches, stops and finds instances.

A driver owns no policy (restarts, health, back-off are the supervisor's); it only does
what it is told and reports what runs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from runtime.spec import Endpoint, GpuDevice, InstanceSpec

# Labels every container / pid record carries (podman labels, process state files).
LABEL_BLOCK = "aiosd.block"
LABEL_INSTANCE = "aiosd.instance"
LABEL_NODE = "aiosd.node"
LABEL_DIGEST = "aiosd.digest"
LABEL_SOCKET = "aiosd.socket"
SOCKET_NAME = "task.sock"
CONTAINER_SOCKET_DIR = "/run/aiosd"


@dataclass(frozen=True, slots=True)
class Observed:
    """What a driver sees of one instance it owns."""

    block_id: str
    instance_id: str
    handle: str  # pid or container id
    digest: str  # InstanceSpec.digest() it was started from
    endpoint: Endpoint
    alive: bool
    exit_code: int | None  # when not alive; None if unknown (e.g. an adopted process reaped elsewhere)
    started_at: float  # wall clock


def instance_env(spec: InstanceSpec, node_id: str, cluster_id: str, socket_path: str,
                 gpus: tuple[GpuDevice, ...]) -> dict[str, str]:
    """The AIOSD_INSTANCE_* environment of the instance contract, plus the spec's own env."""
    ctx = dict(spec.context)
    ctx.setdefault("block_id", spec.block_id)
    ctx.setdefault("instance_id", spec.instance_id)
    ctx.setdefault("node_id", node_id)
    ctx.setdefault("cluster_id", cluster_id)
    for key in ("block_data", "block_init_data", "block_init_settings", "block_init_parameters"):
        ctx.setdefault(key, {})
    alloc = dict(ctx.get("allocation_info") or {})
    alloc.update({"gpus": [g.index for g in gpus], "gpu_uuids": [g.uuid for g in gpus],
                  "node_id": node_id, "cluster_id": cluster_id})
    ctx["allocation_info"] = alloc
    env = dict(spec.env)
    env["AIOSD_INSTANCE_SOCKET"] = socket_path
    env["AIOSD_INSTANCE_CONTEXT"] = json.dumps(ctx)
    if spec.workers is not None:
        env["AIOSD_INSTANCE_WORKERS"] = str(spec.workers)
    if spec.queue is not None:
        env["AIOSD_INSTANCE_QUEUE"] = str(spec.queue)
    if gpus:
        ids = ",".join(g.uuid for g in gpus)
        env["NVIDIA_VISIBLE_DEVICES"] = ids
        env["CUDA_VISIBLE_DEVICES"] = ids
    return env


class Driver(Protocol):
    """Start/stop/find instances. All methods are async and never block the loop."""

    name: str

    async def check_image(self, spec: InstanceSpec) -> None:
        """Raise ImageNotFound (or SpecError) when `spec` cannot be started by this driver."""

    async def start(self, spec: InstanceSpec, socket_dir: str, gpus: tuple[GpuDevice, ...]) -> Observed:
        """Start the instance serving on `socket_dir/task.sock`. Raises InstanceStartError, ImageNotFound."""

    async def stop(self, instance_id: str, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`. A missing instance is not an error."""

    async def remove(self, instance_id: str) -> None:
        """Forget the instance (container, pid record, logs kept until then). Idempotent."""

    async def list_owned(self) -> Mapping[str, Observed]:
        """Every instance this node's driver started and has not removed, by instance id."""

    def logs(self, instance_id: str, tail: int = 100, follow: bool = False) -> AsyncIterator[str]:
        """The instance's output lines (last `tail`, then new ones when `follow`). Raises InstanceNotFound."""
        ...

    async def last_lines(self, instance_id: str, n: int) -> tuple[str, ...]:
        """The last `n` lines of output, () when unknown."""
