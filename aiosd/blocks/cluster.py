"""The block service's cluster half (a mixin of BlockService, blocks.py): `aiosd apply --cluster`.

A cluster block is checked like a local one, then sent through the controller gateway (to this
cluster's leader, or to the cluster its clusterAllocator picks) with its documents (BlockSpec);
scale and delete go the same way. Every node runs what the committed state places on it
(follow.py calls resolve_spec and followed here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from aiosd.blocks.apply import CLUSTER, allocator_of
from aiosd.blocks.catalog import BlockCatalog, RecordKind
from aiosd.blocks.follow import PlacementFollower
from aiosd.blocks.loops import BlockLoop
from aiosd.blocks.planning import Plan
from aiosd.controller.errors import ClusterRefused
from aiosd.controller.state import BlockSpec
from aiosd.controller.wire import ForwardAnswer, ForwardRequest, PlaceRequest
from aiosd.instances.service import RuntimeService
from aiosd.specs import ParsedBlock, ParsedComponent, ResolvedBlock, SpecError
from aiosd.specs.parse import parse_document

log = logging.getLogger("aiosd.blocks.service")

# A block travels in one Raft entry (max_command_bytes 512 KiB with the lan profile): leave room.
MAX_CLUSTER_SPEC_BYTES = 256 << 10
VALUES = "body.spec.values"


class ClusterBlocks:
    """Mixin: the cluster half of BlockService (it provides the attributes declared here)."""

    registry: BlockCatalog
    runtime: RuntimeService
    controller: Any
    follower: PlacementFollower | None
    _resolved: dict[str, ResolvedBlock]
    _loops: dict[str, BlockLoop]

    def _resolve_record(self, bid: str, rec: Mapping[str, Any], parsed: ParsedBlock, comp: ParsedComponent
                        ) -> ResolvedBlock:
        raise NotImplementedError  # BlockService._resolve_record

    async def resolve_spec(self, block_id: str, spec: BlockSpec) -> ResolvedBlock:
        """The block a committed placement names, resolved on this node. Raises: SpecError, PolicyError."""
        def go() -> ResolvedBlock:
            block, component = spec.block, spec.component  # ClusterState keeps them in JSON form
            parsed = parse_document(block.get("document"))
            comp = parse_document(component.get("document"))
            if not isinstance(parsed, ParsedBlock) or not isinstance(comp, ParsedComponent):
                raise SpecError.at("spec", "the placement's spec is not a block and its component")
            return self._resolve_record(block_id, block, parsed, comp)

        return await asyncio.to_thread(go)

    def followed(self, block_id: str, res: ResolvedBlock | None) -> None:
        """The follower runs (res) or stopped running (None) this cluster block here."""
        if res is None:
            if block_id not in self._loops:  # not a block applied on this node
                self._resolved.pop(block_id, None)
            return
        self._resolved[block_id] = res

    async def _apply_cluster(self, plan: Plan, starts: Mapping[str, tuple[dict[str, Any], ResolvedBlock]]
                             ) -> dict[str, Any]:
        """Send each changed block to the controller (caller holds the lock); records are stored
        once the controller has committed the placement."""
        placed: dict[str, Any] = {}
        for bid, (rec, res) in starts.items():
            comp = plan.components.get(res.component_uri) or await self.registry.get(RecordKind.COMPONENT,
                                                                                        res.component_uri)
            rec = {**rec, "placement": CLUSTER}
            spec = BlockSpec(block=rec, component=dict(comp or {}))
            size = len(msgpack.packb(spec.model_dump(mode="python"), use_bin_type=True))
            if size > MAX_CLUSTER_SPEC_BYTES:
                raise SpecError.at(VALUES, f"block {bid} and its component take {size} bytes packed; a cluster "
                                   f"placement carries at most {MAX_CLUSTER_SPEC_BYTES}")
            target = await self._target_cluster(bid, res, int(rec["desiredInstances"]))
            if self.runtime.desired(bid):  # it ran here as a node-local block: the cluster takes over
                await self.runtime.set_desired(bid, [])
                self._loops.pop(bid, None)
            answer = await self._submit(ForwardRequest(op="place", cluster=target, place=PlaceRequest(
                block_id=bid, count=int(rec["desiredInstances"]), allocator=allocator_of(res), spec=spec)))
            rec["cluster"] = target
            await self.registry.put(RecordKind.BLOCK, bid, rec)
            placed[bid] = {**answer.result, "cluster": target}
        for d in plan.documents:
            if d["kind"] == "block" and d["id"] in placed:
                d["placement"] = {"cluster": True, "clusterId": placed[d["id"]]["cluster"],
                                  "term": placed[d["id"]].get("term"),
                                  "placements": placed[d["id"]].get("instances", [])}
        if self.follower is not None:
            self.follower.poke()
        return {"dry_run": False, "documents": plan.documents, "warnings": plan.warnings, "task": None}

    async def _target_cluster(self, bid: str, res: ResolvedBlock, count: int) -> str:
        """The cluster the block goes to: its clusterAllocator's pick, else this node's cluster;
        a block already placed somewhere stays there (its controller scales and heals it)."""
        assert self.controller is not None  # apply(cluster=True) checked it
        old = await self.registry.get(RecordKind.BLOCK, bid)
        if old is not None and old.get("placement") == CLUSTER and old.get("cluster"):
            return str(old["cluster"])
        slot = res.policy("clusterAllocator")
        if slot is None:
            return str(self.controller.cluster)
        target: str = await self.controller.choose_cluster(slot.uri, dict(slot.parameters), dict(slot.settings), bid,
                                                           count, allocator_of(res))
        return target

    async def _cluster_of(self, bid: str) -> str | None:
        """The cluster whose controller places `bid`, or None for a block of this node alone."""
        if self.controller is None:
            return None
        if bid in self.controller.view().specs:
            return str(self.controller.cluster)
        rec = await self.registry.get(RecordKind.BLOCK, bid)
        if rec is not None and rec.get("placement") == CLUSTER:
            return str(rec.get("cluster") or self.controller.cluster)
        return None

    async def _submit(self, req: ForwardRequest) -> ForwardAnswer:
        """Through the controller gateway. Raises: ClusterRefused with the controller's status."""
        if self.controller is None:
            raise ClusterRefused(503, "no_controller", "this node runs no controller service")
        answer: ForwardAnswer = await self.controller.submit(req)
        if answer.status >= 400:
            raise ClusterRefused(answer.status, answer.code or "error", answer.message)
        return answer

    async def _scale_cluster(self, bid: str, res: ResolvedBlock, count: int, target: str) -> dict[str, Any]:
        """Scale a cluster block through its cluster's controller (the caller holds the lock)."""
        assert self.controller is not None  # _cluster_of checked it
        before = len(self.controller.view().blocks.get(bid, {}))
        answer = await self._submit(ForwardRequest(op="place", cluster=target, place=PlaceRequest(
            block_id=bid, count=count, allocator=allocator_of(res))))
        before = int(answer.result.get("before", before))  # the controller's count (another cluster's too)
        rec = await self.registry.get(RecordKind.BLOCK, bid)
        if rec is not None:
            rec["desiredInstances"] = count
            await self.registry.put(RecordKind.BLOCK, bid, rec)
        log.info("cluster block scaled", extra={"block": bid, "from": before, "to": count})
        return {"block_id": bid, "from": before, "to": count, "cluster": True,
                "placements": answer.result.get("instances", [])}


__all__ = ["MAX_CLUSTER_SPEC_BYTES", "ClusterBlocks"]
