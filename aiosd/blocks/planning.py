"""The block service's planning half (a mixin of BlockService): what an apply would change.

`_plan` checks every document of an apply before anything is stored: components name registered
policies, blocks resolve against their component, images exist (or can be fetched or built),
placement succeeds on this node (or, for `--cluster`, the controller answers a dry run), and the
governance pre-check accepts the block. It returns a `Plan`; `BlockService.apply` carries it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosd.assets.images import IMAGES
from aiosd.assets.service import AssetsService
from aiosd.blocks.apply import (
    CLUSTER,
    INITIAL_FLOOR,
    CodeRef,
    allocator_of,
    block_dir_of,
    code_for,
    local_node_view,
)
from aiosd.blocks.catalog import BlockCatalog, RecordKind
from aiosd.blocks.infra import plan_cluster, plan_node
from aiosd.controller.allocator import load_published, place_published
from aiosd.controller.placement import Assignment, PlacementResult, place
from aiosd.controller.service import ControllerService
from aiosd.controller.wire import DryRunRequest, ForwardAnswer, ForwardRequest
from aiosd.instances.service import RuntimeService
from aiosd.policies import PolicyRegistry, PolicyRunner
from aiosd.policies.service import PoliciesService
from aiosd.specs import ParsedBlock, ParsedComponent, ParsedMgmt, ParsedSpec, ResolvedBlock, SpecError
from aiosd.specs.errors import Problem
from aiosd.specs.parse import ParsedCluster, ParsedNode
from aiosd.specs.resolve import MAX_LISTED_URIS, PolicyCatalog, component_policies, resolve_block
from runtime import image_exists

VALUES = "body.spec.values"


@dataclass
class Plan:
    """What an apply will do: the answer's documents and warnings, and the records to store."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    parsed_components: dict[str, ParsedComponent] = field(default_factory=dict)
    blocks: dict[str, tuple[dict[str, Any], ResolvedBlock]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    infra: dict[str, dict[str, Any]] = field(default_factory=dict)  # createCluster/addNode: clusters table records


def canonical(doc_values: Mapping[str, Any], template_uri: str) -> dict[str, Any]:
    """The stored form of a document: the AIOS envelope around its values."""
    return {"header": {"templateUri": template_uri, "parameters": {}}, "body": {"spec": {"values": dict(doc_values)}}}


def prefix(problems: Sequence[Problem], i: int, n: int) -> list[Problem]:
    """Problems of document `i` of `n`, their paths under documents[i] when there are several."""
    if n == 1:
        return list(problems)
    return [Problem(f"documents[{i}].{p.path}" if p.path else f"documents[{i}]", p.message) for p in problems]


def checked_count(value: Any, res: ResolvedBlock, action: str) -> int:
    """An instance count a pre-check rewrote, checked like the user's own. Raises: SpecError."""
    if not isinstance(value, int) or isinstance(value, bool) or not res.min_instances <= value <= res.max_instances:
        raise SpecError.at("instances", f"the {action} pre-check rewrote the instance count to {str(value)[:40]}; it "
                           f"must be an integer within minInstances..maxInstances ({res.min_instances}.."
                           f"{res.max_instances})")
    return value


def placement_json(p: PlacementResult) -> dict[str, Any]:
    return {"policy": p.policy_uri, "requested": p.requested, "score": p.score, "unmet": p.unmet,
            "requirement": p.requirement.describe(),
            "placements": [{"node_id": x.node_id, "gpus": list(x.gpus)} for x in p.placements],
            "candidates": [{"node_id": c.node_id, "score": c.score, "capacity": c.capacity, "reason": c.reason}
                           for c in p.candidates]}


def unregistered(reg: PolicyCatalog, path: str, uri: str) -> Problem:
    known = reg.known_uris()
    listed = ", ".join(known[:MAX_LISTED_URIS]) + (" ..." if len(known) > MAX_LISTED_URIS else "")
    return Problem(path, f"policy {uri!r} is not registered; registered: {listed or 'none'}")


class BlockPlanner:
    """Mixin: the planning half of BlockService (it provides the attributes declared here)."""

    registry: BlockCatalog
    runtime: RuntimeService
    controller: ControllerService | None
    policy_svc: PoliciesService | None
    policies: PolicyRegistry
    assets: AssetsService | None
    node_id: str

    async def _component_doc(self, uri: str) -> ParsedComponent | None:
        raise NotImplementedError  # BlockService._component_doc

    async def precheck(self, action: str, payload: dict[str, Any], may_rewrite: tuple[str, ...] = ()
                       ) -> dict[str, Any]:
        raise NotImplementedError  # BlockService.precheck

    async def _target_cluster(self, bid: str, res: ResolvedBlock, count: int) -> str:
        raise NotImplementedError  # ClusterBlocks._target_cluster

    async def _submit(self, req: ForwardRequest) -> ForwardAnswer:
        raise NotImplementedError  # ClusterBlocks._submit

    async def _plan(self, parsed: list[ParsedSpec], reg: PolicyCatalog, overrides: str | None,
                    dry_run: bool, cluster: bool = False) -> Plan:
        """Check every document; the plan, or SpecError listing every problem (paths named)."""
        plan, n = Plan(), len(parsed)
        for i, p in enumerate(parsed):
            if isinstance(p, ParsedComponent):
                await self._plan_component(plan, i, n, p, reg)
        for i, p in enumerate(parsed):
            if isinstance(p, ParsedComponent):
                continue
            if isinstance(p, ParsedCluster | ParsedNode):
                self._plan_infra(plan, i, n, p)
                continue
            if not isinstance(p, ParsedBlock):
                what = "management commands go to `aiosd mgmt` / POST /v1/mgmt/block/{id}" \
                    if isinstance(p, ParsedMgmt) else "only components and blocks are applied on a node for now"
                plan.problems += prefix([Problem("", f"kind {p.kind!r} cannot be applied here: {what}")], i, n)
                continue
            resolved = await self._resolve_new(plan, i, n, p, reg, dry_run)
            if resolved is not None:
                await self._plan_block(plan, p, *resolved, overrides, dry_run, cluster)
        if plan.problems:
            raise SpecError(plan.problems)
        if dry_run:
            for d in plan.documents:
                d["action"] = "would be " + d["action"] if d["action"] != "unchanged" else "unchanged"
        return plan

    def _plan_infra(self, plan: Plan, i: int, n: int, p: ParsedCluster | ParsedNode) -> None:
        members = self.controller.members.swim.members() if self.controller is not None and \
            self.controller.membership is not None else []
        if isinstance(p, ParsedCluster):
            known = {str(m.meta.get("cluster", "")) for m in members}
            known.add(self.controller.cluster if self.controller is not None else "")
            probs, (key, value) = plan_cluster(p, known - {""})
        else:
            probs, (key, value) = plan_node(p, {str(m.node) for m in members} | {self.node_id})
        plan.problems += prefix(probs, i, n)
        plan.infra[key] = value
        plan.documents.append({"kind": p.kind, "id": p.key, "action": "configured"})

    async def _plan_component(self, plan: Plan, i: int, n: int, p: ParsedComponent, reg: PolicyCatalog) -> None:
        slots, _ = component_policies(p.spec)
        for name, rule in slots.items():
            if reg.find(rule.policy_rule_uri) is None:
                plan.problems += prefix([unregistered(reg, f"{VALUES}.policies.{name}.policyRuleURI",
                                                      rule.policy_rule_uri)], i, n)
        rec = {"uri": p.key, "document": canonical(p.envelope.values, p.envelope.template_uri)}
        old = await self.registry.get(RecordKind.COMPONENT, p.key)
        action = "unchanged" if old == rec else ("configured" if old else "created")
        plan.components[p.key] = rec
        plan.parsed_components[p.key] = p
        plan.documents.append({"kind": "component", "id": p.key, "action": action})

    async def _resolve_new(self, plan: Plan, i: int, n: int, p: ParsedBlock, reg: PolicyCatalog, dry_run: bool
                           ) -> tuple[str, ResolvedBlock, CodeRef] | None:
        """The block resolved against its component, with its code; None (problems noted) when it fails."""
        uri = p.spec.block_component_uri
        comp = plan.parsed_components.get(uri) or await self._component_doc(uri)
        if comp is None:
            plan.problems += prefix([Problem(f"{VALUES}.blockComponentURI",
                                             f"component {uri!r} does not exist; apply it first (or in the "
                                             "same file)")], i, n)
            return None
        try:
            res = resolve_block(p, comp, catalog=reg)
        except SpecError as e:
            plan.problems += prefix(e.problems, i, n)
            return None
        bid = p.key or (comp.spec.component_id.name + "-" + hashlib.sha256(
            json.dumps(p.envelope.values, sort_keys=True).encode()).hexdigest()[:8])
        res = dataclasses.replace(res, block_id=bid)
        try:
            code = code_for(res, self.runtime.driver_name)
            await self._check_image(code, res)
        except SpecError as e:
            if not dry_run:  # a dry run validates the spec; a missing image is only reported
                plan.problems += prefix(e.problems, i, n)
                return None
            plan.warnings += [f"block {bid}: {pr}" for pr in e.problems]
            code = CodeRef(image=res.image, block_dir=None, source="missing")
        plan.warnings += [str(w) for w in res.warnings]
        return bid, res, code

    async def _plan_block(self, plan: Plan, p: ParsedBlock, bid: str, res: ResolvedBlock, code: CodeRef,
                          overrides: str | None, dry_run: bool, cluster: bool) -> None:
        uri = p.spec.block_component_uri
        rec = {**res.to_record(), "document": canonical(p.envelope.values, p.envelope.template_uri),
               "policyOverrides": overrides or "", "nodeId": self.node_id}
        old = await self.registry.get(RecordKind.BLOCK, bid)
        committed = self.controller.state.view().blocks.get(bid, {}) if cluster and self.controller else {}
        running = len(committed) if cluster else len(self.runtime.desired(bid))
        same = old is not None and old.get("document") == rec["document"] \
            and old.get("policyOverrides") == rec["policyOverrides"] \
            and (old.get("placement") == CLUSTER) == cluster
        count = old.get("desiredInstances", 0) if same and old else max(res.min_instances, INITIAL_FLOOR)
        count = min(max(count, res.min_instances), res.max_instances)
        doc: dict[str, Any] = {"kind": "block", "id": bid, "component": uri, "instances": count,
                               "code": {"image": code.image, "blockDir": str(code.block_dir or ""),
                                        "source": code.source},
                               "placement": await self._placement_doc(bid, res, count, dry_run, cluster)}
        if same and running == count:
            doc["action"] = "unchanged"
        else:
            doc["action"] = "configured" if old else "created"
            checked = await self.precheck("add_block", {"block_id": bid, "component_uri": uri, "instances": count,
                                                        "values": dict(p.envelope.values)}, ("instances",))
            if checked["instances"] != count:
                count = checked_count(checked["instances"], res, "add_block")
                doc["instances"] = count
            rec.update(desiredInstances=count, code=doc["code"])
            if same and old is not None:  # parameters changed live (mgmt) survive a re-apply
                rec["parameters"] = old.get("parameters", rec["parameters"])
                res = dataclasses.replace(res, parameters=rec["parameters"])
            plan.blocks[bid] = (rec, res)
        plan.documents.append(doc)

    async def _placement_doc(self, bid: str, res: ResolvedBlock, count: int, dry_run: bool, cluster: bool
                             ) -> dict[str, Any]:
        if not cluster:
            return placement_json(await self._place(res, count, dry_run=dry_run, exclude=bid))
        if not dry_run:  # the controller places it
            return {"cluster": True}
        # A dry run asks the chosen cluster's controller for candidates and scores.
        target = await self._target_cluster(bid, res, count)
        answer = await self._submit(ForwardRequest(op="dry_run", cluster=target, dry_run=DryRunRequest(
            block_id=bid, count=max(count, 1), allocator=allocator_of(res))))
        return {**answer.result, "clusterId": target}

    async def _check_image(self, code: CodeRef, res: ResolvedBlock) -> None:
        if code.image is None:
            return
        if await image_exists(code.image, await self.runtime.image_cli()):
            return
        bdir, _ = block_dir_of(res)
        if bdir is None and not await self._published_image(code.image):
            raise SpecError.at(f"{VALUES}.blockComponentURI",
                               f"image {code.image!r} (containerRegistryInfo.containerImage of component "
                               f"{res.component_uri}) does not exist on this node, no peer published it and no "
                               "registry is reachable; build it with `aiosd image build DIR -t IMAGE` (and "
                               "`aiosd image push` to share it), or name a blockDir")

    async def _published_image(self, name: str) -> bool:
        """Whether some node published image `name` to the network (`aiosd image push`)."""
        if self.assets is None:
            return False
        with contextlib.suppress(Exception):  # no registry here: not published as far as we can tell
            return await self.assets.registry().get(IMAGES, name) is not None
        return False

    async def _place(self, res: ResolvedBlock, count: int, *, dry_run: bool, exclude: str) -> PlacementResult:
        holdings = self.runtime.sup.gpus.holdings()
        assignments = []
        for s in self.runtime.sup.status():
            if s.block_id != exclude:
                gpus, exclusive = holdings.get(s.instance_id, ((), False))
                assignments.append(Assignment(block_id=s.block_id, instance_id=s.instance_id, gpus=gpus,
                                              exclusive=exclusive))
        metrics = await self.runtime.inventory.ametrics() if self.runtime.gpu_info else []
        view = await asyncio.to_thread(local_node_view, self.node_id, self.runtime.gpu_info, metrics, assignments)
        published = await load_published(res, self.policy_svc.runner) if self.policy_svc is not None else None
        if published is not None:  # a pushed policy: it answers from its sandbox worker, awaited here
            return await place_published(res, [view], count, published, dry_run)
        return await asyncio.to_thread(place, res, [view], count, PolicyRunner(self.policies), dry_run)


__all__ = ["VALUES", "BlockPlanner", "Plan", "canonical", "checked_count", "placement_json", "prefix",
           "unregistered"]
