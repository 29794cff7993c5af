"""The runtime inside the daemon: driver, supervisor, balancer and GPU inventory as one service.

Serves the node-local instance API (`/v1/local/instances`, `/v1/ps`, `/v1/logs/{instance}`,
`/v1/gpus`). It decides nothing about blocks: the apply flow (aiosd.blocks.service) or, later,
the elected controller tells it which instances this node runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.routes import ApiProblem, QueryFlag, Route, json_ok, read_json, read_query
from aiosd.context import NodeContext, ServiceKey
from aiosd.instances.gpu_source import node_nvml
from runtime import (
    Balancer,
    Driver,
    GpuBook,
    GpuInfo,
    GpuInventory,
    InstanceClient,
    InstanceNotFound,
    InstanceSpec,
    Observed,
    Supervisor,
    SupervisorConfig,
    open_driver,
    specs_from_request,
)
from runtime.errors import AiosdRuntimeError, GpuError, ImageNotFound
from runtime.errors import SpecError as RuntimeSpecError
from runtime.images import PodmanCli
from runtime.podman_conf import podman_env, write_containers_conf
from runtime.spec import spec_to_json

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the NUL
# Why 10,000: `aiosd logs --tail` is for reading, not for bulk export (the file is on disk).
MAX_TAIL = 10_000


class LogsQuery(BaseModel):
    """`GET /v1/logs/{instance}` query parameters."""

    model_config = ConfigDict(extra="ignore")
    tail: int = Field(100, ge=0, le=MAX_TAIL, description="the last N lines")
    follow: QueryFlag = Field(False, description="keep streaming new lines")


def instance_socket_root(data_dir: Path, api_socket: Path) -> Path:
    """A directory for instance sockets short enough for sun_path: under the data dir when it
    fits, else beside the API socket (a short runtime dir such as /run/aiosd)."""
    first = data_dir / "runtime" / "sock"
    if len(str(first / ("x" * 12) / "task.sock").encode()) <= _SUN_PATH_MAX:
        return first
    tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
    return api_socket.parent / f"aiosd-inst-{tag}"


class RuntimeService:
    """`async with RuntimeService(ctx)`: the driver, supervisor and balancer of this node."""

    name = "runtime"

    def __init__(self, settings: Any, data_dir: Path, node_id: str, cluster_id: str = "default") -> None:
        self._settings = settings
        self._data_dir = data_dir
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._stack = contextlib.AsyncExitStack()
        self.driver: Driver | None = None
        self.supervisor: Supervisor | None = None
        self.balancer: Balancer | None = None
        self.client: InstanceClient | None = None
        self.inventory = GpuInventory(node_nvml())  # real NVML, or the fake inventory a test names
        self.gpu_info: tuple[GpuInfo, ...] = ()

    async def __aenter__(self) -> Self:
        try:
            self.gpu_info = await self.inventory.aopen()
            self.driver = await self._stack.enter_async_context(open_driver(
                self._settings.runtime.driver, self._data_dir / "runtime", self.node_id, self.cluster_id))
            self.client = await self._stack.enter_async_context(InstanceClient())
            cfg = SupervisorConfig(node_id=self.node_id, data_dir=self._data_dir / "runtime",
                                   socket_dir=instance_socket_root(self._data_dir, Path(self._settings.socket_path)),
                                   cluster_id=self.cluster_id, tick_s=0.25, backoff_initial_s=0.5)
            self.supervisor = await self._stack.enter_async_context(
                Supervisor(cfg, self.driver, GpuBook(self.gpu_info), self.client))
            self.balancer = Balancer(self.supervisor, self.client)
        except BaseException:
            await self._stack.aclose()
            self.inventory.close()
            raise
        log.info("runtime ready", extra={"driver": self.driver.name, "gpus": len(self.gpu_info)})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        await asyncio.to_thread(self.inventory.close)

    @property
    def sup(self) -> Supervisor:
        if self.supervisor is None:
            raise RuntimeError("the runtime service is not running")
        return self.supervisor

    @property
    def driver_name(self) -> str:
        return self.driver.name if self.driver is not None else ""

    async def set_desired(self, block_id: str, specs: list[InstanceSpec]) -> None:
        """Make `specs` the block's instances here. Raises the runtime's SpecError/ImageNotFound/GpuError."""
        await self.sup.set_desired(block_id, specs)

    async def image_cli(self) -> PodmanCli:
        """The podman command line with the same containers.conf (runc, ulimits) as `aiosd image`."""
        conf = await asyncio.to_thread(write_containers_conf, self._data_dir / "podman")
        return PodmanCli(env=podman_env(conf))

    async def settle(self, delay_s: float = 0.1) -> None:
        """Give the supervisor a tick to move (used by waits that poll its status with a deadline)."""
        await asyncio.sleep(delay_s)

    async def owned(self) -> Mapping[str, Observed]:
        """What the driver runs for this node (containers / processes), by instance id."""
        if self.driver is None:
            return {}
        return await self.driver.list_owned()

    def desired(self, block_id: str) -> list[InstanceSpec]:
        """The block's desired instance specs (the supervisor has no public reader yet: see the report)."""
        return list(self.sup._desired.blocks.get(block_id, []))

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/local/instances", self._h_get_local, "desired instances of this node", tag="runtime"),
            Route("PUT", "/v1/local/instances", self._h_put_local,
                  "set one block's desired instances on this node (body: {block_id, instances[]})", tag="runtime"),
            Route("GET", "/v1/ps", self._h_ps, "instances on this node: block, state, restarts, GPUs, uptime",
                  tag="runtime"),
            Route("GET", "/v1/logs/{instance}", self._h_logs, "an instance's output (?tail=N&follow=1)",
                  tag="runtime", query=LogsQuery),
            Route("GET", "/v1/gpus", self._h_gpus, "GPU inventory, live metrics and holders", tag="runtime"),
        ]

    # ----- handlers -------------------------------------------------------------------------
    async def _h_get_local(self, request: web.Request) -> web.Response:
        out: dict[str, list[dict[str, Any]]] = {}
        for block_id in sorted(self.sup._desired.blocks):
            out[block_id] = [spec_to_json(s) for s in self.desired(block_id)]
        return json_ok({"blocks": out})

    async def _h_put_local(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            block_id, specs = specs_from_request(body)
            await self.sup.set_desired(block_id, specs)
        except RuntimeSpecError as e:
            raise ApiProblem(422, "invalid", str(e).split(": ", 1)[-1], e.field) from None
        except ImageNotFound as e:
            raise ApiProblem(422, "image_not_found", str(e), "image") from None
        except GpuError as e:
            raise ApiProblem(409, "no_gpu", str(e), "gpus") from None
        return json_ok({"block_id": block_id, "instances": [s.instance_id for s in specs]})

    async def _h_ps(self, request: web.Request) -> web.Response:
        rows = []
        served = self.balancer.served if self.balancer is not None else {}
        for st in self.sup.status():
            row = st.to_json()
            row["served"] = served.get(st.instance_id, 0)
            row["outstanding"] = self.balancer.outstanding(st.instance_id) if self.balancer else 0
            rows.append(row)
        return json_ok({"driver": self.driver_name, "instances": rows})

    async def _h_logs(self, request: web.Request) -> web.StreamResponse:
        iid = request.match_info["instance"]
        q = await read_query(request, LogsQuery)
        tail, follow = q.tail, q.follow
        lines = self.sup.logs(iid, tail=tail, follow=follow)
        try:
            first = await anext(lines, None)
        except InstanceNotFound as e:
            raise ApiProblem(404, "not_found", str(e), "instance") from None
        except AiosdRuntimeError as e:
            raise ApiProblem(500, "runtime_error", str(e), "instance") from None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        try:
            if first is not None:
                await resp.write((first.rstrip("\n") + "\n").encode())
            async for line in lines:
                await resp.write((line.rstrip("\n") + "\n").encode())
        except (ConnectionResetError, InstanceNotFound):
            pass  # the reader left, or the instance was removed while following
        finally:
            await lines.aclose()  # type: ignore[attr-defined]  # an async generator
        await resp.write_eof()
        return resp

    async def _h_gpus(self, request: web.Request) -> web.Response:
        metrics = {m.index: m for m in await self.inventory.ametrics()} if self.gpu_info else {}
        holders = self.sup.gpus.holders()
        rows = []
        for g in self.gpu_info:
            m = metrics.get(g.index)
            rows.append({
                "index": g.index, "uuid": g.uuid, "name": g.name, "memory_total_mb": g.memory_total_mb,
                "memory_used_mb": m.memory_used_mb if m else None, "memory_free_mb": m.memory_free_mb if m else None,
                "util_pct": m.utilization_pct if m else None, "temperature_c": m.temperature_c if m else None,
                "holders": [h.instance_id for h in holders.get(g.index, [])],
            })
        return json_ok({"gpus": rows})


RUNTIME_KEY: ServiceKey[RuntimeService] = ServiceKey("runtime")


def runtime_service(ctx: NodeContext) -> RuntimeService:
    return RuntimeService(ctx.settings, ctx.data_dir, ctx.identity.node_id)


__all__ = ["RUNTIME_KEY", "RuntimeService", "instance_socket_root", "runtime_service"]
