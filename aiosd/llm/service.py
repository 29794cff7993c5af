"""The OpenAI endpoint's service: which LLM blocks this node can reach, and one task run on one of them.

A model is an LLM block (its component is of type `model`, or it is tagged `llm`) named by its block id
or by its component's name. The task runs through the block inference path (`aiosd.blocks.api.run_task`):
at a local instance, or forwarded to a node of the cluster that runs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Self

from aiosd.api.routes import ApiProblem
from aiosd.blocks.api import run_task
from aiosd.blocks.service import BLOCKS_KEY, BlockService
from aiosd.context import NodeContext, ServiceKey
from aiosd.llm.oai import OpenAIError, block_error
from aiosd.llm.split import split_info
from aiosd.registry.service import REGISTRY_KEY, RegistryService
from aiosd.specs.resolve import ResolvedBlock
from aiosd.vdag.service import TABLE as VDAG_TABLE
from aiosd.vdag.service import VDAG_KEY, VdagService
from federation.replication.errors import ReplicationError

log = logging.getLogger(__name__)
TABLE = "inference_servers"
PUBLISH_EVERY_S = 5.0  # the record is rewritten only when what it says changes


def component_name(uri: str) -> str:
    """`model.llm:1.0.0-stable` → `llm`."""
    return uri.split(":", 1)[0].split(".", 1)[-1]


def is_llm(res: ResolvedBlock) -> bool:
    return res.component_uri.startswith("model.") or "llm" in res.tags


class LlmService:
    """Resolves `model` to a block and runs OpenAI requests on it as block tasks."""

    name = "llm"

    def __init__(self, blocks: BlockService, registry: RegistryService | None = None, node_id: str = "",
                 url: str = "", vdag: VdagService | None = None) -> None:
        self.blocks = blocks
        self.vdag = vdag  # split models are vDAGs (None without the vdag role)
        self._splits: Any = None  # split_service.SplitModels, made on first use (it imports torch)
        self.registry = registry
        self.node_id = node_id
        self.url = url
        self.created = int(time.time())
        self.published: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        if self.registry is not None and self.node_id:
            self._task = asyncio.create_task(self._publish_loop(), name="llm-inference-servers")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def record(self, models: dict[str, ResolvedBlock], splits: list[str] | None = None) -> dict[str, Any]:
        """This node's `inference_servers` record (AIOS: node, URL, models, tags); `splits`: split-model names."""
        tags = sorted({t for res in models.values() for t in res.tags})
        return {"node": self.node_id, "url": self.url, "api": "openai", "models": sorted([*models, *(splits or [])]),
                "components": sorted({component_name(r.component_uri) for r in models.values()}), "tags": tags}

    async def publish_once(self) -> bool:
        """Write this node's record when it changed; False when the registry refused it."""
        assert self.registry is not None
        rec = self.record(await self.models(), [uri.split(":", 1)[0] for uri in await self.split_models()])
        if rec == self.published:
            return True
        try:
            await self.registry.put(TABLE, self.node_id, rec)
        except (ReplicationError, KeyError, ValueError) as e:
            log.info("inference_servers record not written", extra={"error": str(e)})
            return False
        self.published = rec
        return True

    async def _publish_loop(self) -> None:
        while True:
            try:
                await self.publish_once()
            except Exception as e:  # noqa: BLE001 - the loop outlives one bad round; logged
                log.warning("inference_servers publish failed", extra={"error": str(e)})
            await asyncio.sleep(PUBLISH_EVERY_S)

    async def models(self) -> dict[str, ResolvedBlock]:
        """Every LLM block this node knows: applied here or committed for the cluster, by block id."""
        ids = set(self.blocks._resolved)
        ctl = self.blocks.controller
        if ctl is not None:
            ids |= set(ctl.view().specs)
        found: dict[str, ResolvedBlock] = {}
        for bid in sorted(ids):
            res = await self.blocks.lookup(bid)
            if res is not None and is_llm(res):
                found[bid] = res
        return found

    async def resolve(self, model: str) -> str:
        """The block id serving `model`. Raises OpenAIError 404."""
        models = await self.models()
        if model in models:
            return model
        for bid, res in models.items():
            if component_name(res.component_uri) == model or str(res.init_data.get("model_name", "")) == model:
                return bid
        known = ", ".join(sorted(models) + sorted(await self.split_models())) or "none"
        raise OpenAIError(404, f"The model {model!r} does not exist (LLM blocks here: {known})", "model",
                          "model_not_found")

    async def split_models(self) -> dict[str, dict[str, Any]]:
        """Split models: vDAG uri → its `llm` settings; empty without the vdag role."""
        if self.vdag is None:
            return {}
        out = {}
        for e in await self.vdag.registry.scan(VDAG_TABLE):
            info = split_info(e.value) if isinstance(e.value, dict) else None
            if info is not None:
                out[str(e.key)] = info
        return out

    async def find_split(self, model: str) -> tuple[str, dict[str, Any]] | None:
        """(uri, settings) of the split model named `model` (its vDAG name or uri), else None."""
        for uri, info in (await self.split_models()).items():
            if model in (uri, uri.split(":", 1)[0]):
                return uri, info
        return None

    def split_runner(self) -> Any:
        """The split models' entry (split_service.SplitModels); imported on first use: it needs torch."""
        if self._splits is None:
            from aiosd.llm.split_service import SplitModels

            assert self.vdag is not None
            self._splits = SplitModels(self.vdag)
        return self._splits

    async def complete(self, model: str, data: dict[str, Any]) -> dict[str, Any]:
        """One OpenAI request on `model`: a split model's vDAG, else an LLM block. Raises OpenAIError."""
        found = await self.find_split(model)
        if found is not None:
            return dict(await self.split_runner().run(found[0], found[1], data))
        return await self.run(await self.resolve(model), data)

    async def run(self, block_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """One task on the block; its output. Raises OpenAIError (block errors mapped)."""
        packet = {"session_id": "", "seq_no": 0, "data": json.dumps(data), "files": [], "frame_ptr": "",
                  "output_ptr": "", "ts": time.time()}
        try:
            _, packets = await run_task(self.blocks, block_id, packet)
        except ApiProblem as e:
            if e.status == 404:
                raise OpenAIError(404, str(e), "model", "model_not_found") from None
            if e.status in (422, 400):
                raise block_error(str(e)) from None
            raise OpenAIError(503 if e.status == 503 else 502, str(e), None, e.code, "api_error") from None
        if not isinstance(packets, list | tuple) or not packets or not isinstance(packets[0], dict):
            raise OpenAIError(502, f"block {block_id!r} answered no output packet", None, "upstream_error", "api_error")
        raw = packets[0].get("data")
        try:
            out = json.loads(raw) if isinstance(raw, str | bytes) else raw
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise OpenAIError(502, f"block {block_id!r} is not an LLM block (its output is not an object)", None,
                              "upstream_error", "api_error")
        return out


LLM_KEY: ServiceKey[LlmService] = ServiceKey("llm")


def llm_service(ctx: NodeContext) -> LlmService:
    port = ctx.settings.api.tcp_port
    url = f"http://127.0.0.1:{port}/v1" if port else f"unix:{ctx.settings.socket_path}"
    return LlmService(ctx.get(BLOCKS_KEY), ctx.find(REGISTRY_KEY), ctx.identity.node_id, url, ctx.find(VDAG_KEY))


__all__ = ["LLM_KEY", "LlmService", "component_name", "is_llm", "llm_service"]
