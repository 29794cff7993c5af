"""The vdag service: vDAG records (network registry table `vdags`), apply/delete/describe, and the
block locator the data plane routes with. The data plane itself (entry, hops, results) is flow.py.

Apply = parse (done by the blocks apply path, which hands createvDAG documents here) → assignment
(manualBlockId, or the node's assignmentPolicyRule over the known blocks) → compile (compile.py) →
record {uri, status, assignment, graph, nested, policies, document} written to `vdags` (admin-only,
replicated to every node). Every check runs before the write: a refused document stores nothing.
Status: `pending` when written, `active` once every stage's block runs an instance somewhere;
describe adds the live health (`degraded`: a stage with no instance).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self

from aiosd.blocks.catalog import RecordKind
from aiosd.blocks.service import BLOCKS_KEY, BlockService
from aiosd.context import NodeContext, ServiceKey
from aiosd.membership.service import MEMBERSHIP_KEY, MembershipService
from aiosd.metrics.service import METRICS_KEY, MetricsService
from aiosd.policies.errors import PolicyError
from aiosd.registry.service import REGISTRY_KEY, RegistryService
from aiosd.specs import ParsedSpec, ParsedVdag, SpecError
from aiosd.specs.base import rule_values
from aiosd.specs.errors import Problem
from aiosd.specs.filters import compile_filter
from aiosd.vdag.compile import CompiledVdag, assign, compile_graph, node_path
from aiosd.vdag.errors import VdagError
from aiosd.vdag.routing import Target
from federation.replication import ReplicationError

log = logging.getLogger(__name__)

TABLE = "vdags"
ASSIGN_FILTER_URI = "policy.vdag.assign-filter:v1"  # built in: the blocks matching parameters.filter
CACHE_S = 1.0  # compiled vDAGs and block locations are re-read this often (routes follow the registries)


class VdagService:
    name = "vdag"

    def __init__(self, ctx: NodeContext, registry: RegistryService, blocks: BlockService,
                 membership: MembershipService | None, metrics: MetricsService | None = None) -> None:
        self.metrics = metrics
        self.ctx = ctx
        self.registry = registry
        self.blocks = blocks
        self.membership = membership
        self.node_id = ctx.identity.node_id
        self._compiled: dict[str, tuple[float, CompiledVdag, dict[str, Any]]] = {}
        self._targets: dict[str, tuple[float, list[Target]]] = {}
        self.flow: Any = None  # the VdagFlow, set at start

    async def __aenter__(self) -> Self:
        from aiosd.vdag.flow import VdagFlow

        self.blocks.vdag_apply = self.apply_documents
        self.flow = VdagFlow(self)
        await self.flow.start()
        if self.metrics is not None:
            self.metrics.sections["vdags"] = self.flow.all_metrics
            self.metrics.prometheus_sources.append(self.flow.prometheus)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.blocks.vdag_apply = None
        if self.metrics is not None and self.flow is not None:
            self.metrics.sections.pop("vdags", None)
            with contextlib.suppress(ValueError):
                self.metrics.prometheus_sources.remove(self.flow.prometheus)
        if self.flow is not None:
            await self.flow.stop()

    # ----- lookups ------------------------------------------------------------------------------
    async def record(self, uri: str) -> dict[str, Any] | None:
        e = await self.registry.get(TABLE, uri)
        return dict(e.value) if e is not None else None

    async def compiled(self, uri: str, fresh: bool = False) -> tuple[CompiledVdag, dict[str, Any]] | None:
        """The compiled vDAG and its record (cached CACHE_S; a delete is seen within that; `fresh`:
        read the record again)."""
        now = time.monotonic()
        hit = self._compiled.get(uri)
        if hit is not None and now - hit[0] < CACHE_S and not fresh:
            return hit[1], hit[2]
        rec = await self.record(uri)
        if rec is None:
            self._compiled.pop(uri, None)
            return None
        c = CompiledVdag.from_record(uri, rec)
        if len(self._compiled) > 1024:
            self._compiled.clear()
        self._compiled[uri] = (now, c, rec)
        return c, rec

    def alive(self) -> dict[str, str]:
        return dict(self.membership.alive()) if self.membership is not None else {}

    def targets(self, block_id: str) -> list[Target]:
        """Every instance of `block_id` this node knows of: its own healthy ones, and those the
        committed placements put on other alive nodes (cached CACHE_S)."""
        now = time.monotonic()
        hit = self._targets.get(block_id)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
        out = [Target(self.node_id, iid) for iid, _ in self.blocks.runtime.sup.healthy(block_id)]
        ctl = self.blocks.controller
        if ctl is not None:
            alive = self.alive()
            for iid, inst in ctl.view().blocks.get(block_id, {}).items():
                if inst.node_id != self.node_id and inst.node_id in alive:
                    out.append(Target(inst.node_id, iid, alive[inst.node_id]))
        self._targets[block_id] = (now, out)
        return out

    async def known_blocks(self) -> dict[str, dict[str, Any]]:
        """Block id → record, for every block this node knows (its catalog and the cluster's)."""
        out: dict[str, dict[str, Any]] = {}
        for rec in await self.blocks.registry.list(RecordKind.BLOCK):
            out[str(rec.get("id"))] = {k: v for k, v in rec.items() if k != "document"}
        ctl = self.blocks.controller
        if ctl is not None:
            view = ctl.view()
            for bid in [*view.specs, *view.blocks]:
                out.setdefault(bid, {"id": bid, "placement": "cluster"})
        return out

    # ----- apply ----------------------------------------------------------------------------------
    async def apply_documents(self, docs: Sequence[ParsedSpec], dry_run: bool) -> list[dict[str, Any]]:
        """Apply createvDAG documents (in order: a later one may nest an earlier one)."""
        out = []
        staged: dict[str, CompiledVdag] = {}
        for p in docs:
            if not isinstance(p, ParsedVdag):
                raise SpecError([Problem("", f"kind {p.kind!r} is not a vDAG")])
            out.append(await self.apply_one(p, dry_run, staged))
        return out

    async def _candidates(self, p: ParsedVdag, known: Mapping[str, dict[str, Any]]) -> dict[str, list[str]]:
        """What each assignment policy answers over the known blocks (matching its filter)."""
        out: dict[str, list[str]] = {}
        for i, node in enumerate(p.spec.node_values()):
            if node.node_type == "vdag" or node.manual_block_id or node.assignment_policy_rule is None:
                continue
            rule = rule_values(node.assignment_policy_rule)
            path = node_path(p.spec, i) + ".assignmentPolicyRule"
            raw_filter = rule.parameters.get("filter")
            pred = compile_filter(raw_filter, path + ".parameters.filter") if raw_filter else None
            matching = [r for r in known.values() if pred is None or pred(r)]
            if rule.policy_rule_uri == ASSIGN_FILTER_URI:
                out[node.node_label] = [str(r["id"]) for r in matching]
                continue
            svc = self.blocks.policy_svc
            if svc is None:
                raise SpecError.at(path, f"node '{node.node_label}': no policy {rule.policy_rule_uri!r} here")
            try:
                h = await svc.runner.load(rule.policy_rule_uri, parameters=dict(rule.parameters),
                                          settings=dict(rule.settings), rule_id=f"{p.spec.uri}/{node.node_label}")
                ans = await h.eval({"blocks": matching, "node": {"nodeLabel": node.node_label}})
            except PolicyError as e:
                raise SpecError.at(path, f"node '{node.node_label}': the assignment policy failed: {e}") from None
            got = ans.get("blocks", [ans["block_id"]] if ans.get("block_id") else [])
            out[node.node_label] = [str(b.get("id") if isinstance(b, dict) else b) for b in got]
        return out

    async def apply_one(self, p: ParsedVdag, dry_run: bool, staged: dict[str, CompiledVdag]) -> dict[str, Any]:
        spec = p.spec
        known = await self.known_blocks()
        assignment = assign(spec, known, await self._candidates(p, known))
        nested: dict[str, CompiledVdag] = dict(staged)
        for node in spec.node_values():
            if node.node_type == "vdag" and node.vdag_uri and node.vdag_uri not in nested:
                rec = await self.record(node.vdag_uri)
                if rec is not None:
                    nested[node.vdag_uri] = CompiledVdag.from_record(node.vdag_uri, rec)
        c = compile_graph(spec, assignment, nested)
        staged[c.uri] = c
        missing = [s.label for s in c.stages.values() if not self.targets(s.block_id)]
        status = "active" if not missing else "pending"
        rec = {"uri": c.uri, "status": status, "reason": "" if not missing else
               "no running instance yet for stage(s) " + ", ".join(missing[:10]),
               **c.to_record(), "controller": spec.controller.model_dump(mode="json", by_alias=True),
               "values": p.envelope.values,
               "applied_by": self.node_id, "applied_at": time.time()}
        doc = {"kind": "vdag", "id": c.uri, "action": "dry-run" if dry_run else "applied", "status": status,
               "assignment": c.assignment, "graph": rec["graph"]}
        if not dry_run:
            old = await self.record(c.uri)
            await self.registry.put(TABLE, c.uri, rec)
            self._compiled.pop(c.uri, None)
            doc["action"] = "configured" if old is not None else "created"
        return doc

    async def delete(self, uri: str) -> bool:
        users = [e.key for e in await self.registry.scan(TABLE) if uri in (e.value.get("nested") or ())]
        if users:
            raise VdagError(409, "in_use", f"vDAG {uri!r} is nested in {', '.join(users[:5])}; delete those first",
                            "uri")
        self._compiled.pop(uri, None)
        return await self.registry.delete(TABLE, uri)

    async def describe(self, uri: str) -> dict[str, Any]:
        got = await self.compiled(uri)
        if got is None:
            raise VdagError(404, "not_found", f"no vDAG {uri!r}", "uri")
        c, rec = got
        alive = self.alive()
        stages = []
        for label, s in c.stages.items():
            ts = self.targets(s.block_id)
            stages.append({"label": label, "block_id": s.block_id, "children": list(s.children),
                           "parents": list(s.parents),
                           "serving": [{"node": t.node, "instance": t.instance} for t in ts],
                           "healthy": bool(ts)})
        health = "healthy" if all(s["healthy"] for s in stages) else "degraded"
        out = {k: v for k, v in rec.items() if k != "values"}
        out.update({"stages": stages, "health": health, "alive_nodes": len(alive),
                    "metrics": self.flow.metrics_of(uri) if self.flow is not None else {},
                    "trace": self.flow.traces_of(uri) if self.flow is not None else []})
        if out.get("status") == "pending" and health == "healthy":
            out["status"] = "active"
            with contextlib.suppress(ReplicationError):  # only an admin node writes it; others just show it
                await self.registry.put(TABLE, uri, {**rec, "status": "active", "reason": ""})
                self._compiled.pop(uri, None)
        return out


VDAG_KEY: ServiceKey[VdagService] = ServiceKey("vdag")
ApplyHook = Callable[[Sequence[ParsedSpec], bool], Awaitable[list[dict[str, Any]]]]


def vdag_service(ctx: NodeContext) -> VdagService:
    return VdagService(ctx, ctx.get(REGISTRY_KEY), ctx.get(BLOCKS_KEY), ctx.find(MEMBERSHIP_KEY), ctx.find(METRICS_KEY))


__all__ = ["ASSIGN_FILTER_URI", "TABLE", "VDAG_KEY", "ApplyHook", "VdagService", "vdag_service"]
