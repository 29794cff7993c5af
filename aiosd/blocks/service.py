"""The block service: apply/delete/scale AIOS specs on this node, plus the autoscaler and health loops.

Apply = parse → validate → policies registered → store component → resolve block → place on
this node → instance specs → supervisor.set_desired, reported as a Task. All checks run before
anything is stored, so a rejected document changes nothing. One lock serialises changes.
Inference and management requests are served by aiosd.blocks.api through this service.

`apply(cluster=True)` (`aiosd apply --cluster`) places the block across the cluster instead: the
same checks, then the block travels with a placement request to the elected controller (through
the gateway, so any node accepts it); every node runs what the committed state places on it
(follow.py). Scale and delete of such a block go to the controller too.

Parts live beside this module as mixins: cluster.py (the cluster path), loops.py (the autoscaler
and health loops), planning.py (checks and plans of an apply) and serving.py (forwarded tasks,
published load balancing, governance pre-checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Self

from aiosd.assets.images import ensure_image_from_peers
from aiosd.assets.service import ASSETS_KEY, AssetsService
from aiosd.blocks.apply import (
    CLUSTER,
    CodeRef,
    block_dir_of,
    code_for,
    instance_ids,
    instance_specs,
)
from aiosd.blocks.catalog import BlockCatalog, RecordKind
from aiosd.blocks.cluster import ClusterBlocks
from aiosd.blocks.cluster_scale import ClusterScaler
from aiosd.blocks.errors import ImageUnavailable, InstanceFailed, RuntimeRefused
from aiosd.blocks.follow import PlacementFollower
from aiosd.blocks.forward import TaskForwarder
from aiosd.blocks.loops import BlockLoop, BlockLoops
from aiosd.blocks.network import NetworkRecords
from aiosd.blocks.planning import VALUES, BlockPlanner, canonical, checked_count, prefix
from aiosd.blocks.serving import BlockServing
from aiosd.context import NodeContext, ServiceKey
from aiosd.controller.errors import ClusterRefused
from aiosd.controller.service import CONTROLLER_KEY, ControllerService
from aiosd.controller.wire import ForwardRequest
from aiosd.errors import AiosdError
from aiosd.instances.service import RUNTIME_KEY, RuntimeService
from aiosd.policies import (
    AIOS_EXAMPLE_OVERRIDES,
    builtin_registry,
)
from aiosd.policies.errors import PolicyError
from aiosd.policies.runner import Catalog
from aiosd.policies.service import POLICIES_KEY, PoliciesService
from aiosd.registry.service import REGISTRY_KEY
from aiosd.specs import ParsedBlock, ParsedComponent, ParsedSpec, ParsedVdag, ResolvedBlock, SpecError
from aiosd.specs.errors import Problem, join_path
from aiosd.specs.parse import parse_document, split_documents
from aiosd.specs.resolve import PolicyCatalog, resolve_block
from aiosd.tasks.service import TASKS_KEY, TaskHandle, TaskService
from runtime import InstanceState, build_block, image_exists
from storage import Store

log = logging.getLogger(__name__)

OVERRIDE_SETS: Mapping[str, Mapping[str, str]] = {"aios-examples": AIOS_EXAMPLE_OVERRIDES}
READY_TIMEOUT_S = 120.0  # instances starting → healthy, per apply task
REMOVE_TIMEOUT_S = 30.0


# msgpack (the registry's encoding, and the wire's) holds integers in [-2**63, 2**64 - 1].
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def unstorable(doc: Any, path: str) -> list[Problem]:
    """Integers the registry cannot store, by JSON path (the rest of JSON is storable)."""
    if isinstance(doc, bool):
        return []
    if isinstance(doc, int):
        return [] if _INT_MIN <= doc <= _INT_MAX else [Problem(path, "integer out of the 64-bit range")]
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in unstorable(v, join_path(path, str(k)))]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in unstorable(v, join_path(path, i))]
    return []


# BlockServing before BlockPlanner: the planner declares `precheck` as a stub that BlockServing implements.
class BlockService(ClusterBlocks, BlockLoops, BlockServing, BlockPlanner):
    name = "blocks"

    def __init__(self, registry: BlockCatalog, runtime: RuntimeService, tasks: TaskService, node_id: str,
                 controller: ControllerService | None = None, store: Store | None = None,
                 policy_service: PoliciesService | None = None) -> None:
        self.registry = registry
        self.runtime = runtime
        self.tasks = tasks
        self.node_id = node_id
        self.controller = controller  # ControllerService, or None on a node without one
        self.follower: PlacementFollower | None = None
        self.forwarder: TaskForwarder | None = None  # inference for cluster blocks that run elsewhere
        # createvDAG documents in an apply: handed to the vdag role when it runs (it sets this hook)
        self.vdag_apply: Callable[[Sequence[ParsedSpec], bool], Awaitable[list[dict[str, Any]]]] | None = None
        self._store = store
        # The policies service (published policies, templates, governance); None = built-ins only.
        self.policy_svc = policy_service
        self.assets: AssetsService | None = None  # the assets service (images published by peers), set by block_service()
        self._lb: dict[str, tuple[str, Any]] = {}  # block -> (configuration key, published LB policy handle)
        self.policies = builtin_registry()
        self._resolved: dict[str, ResolvedBlock] = {}
        self._components: dict[str, ParsedComponent] = {}
        self._loops: dict[str, BlockLoop] = {}
        self._lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.network: NetworkRecords | None = None  # the network's component/block records, set by block_service()
        self.scaler: ClusterScaler | None = None  # autoscaling of cluster blocks (cluster_scale.py)

    async def __aenter__(self) -> Self:
        for rec in await self.registry.list(RecordKind.BLOCK):
            if rec.get("placement") == CLUSTER:
                continue  # the follower resolves it from the committed state
            try:
                await self._remember(rec)
            except (SpecError, PolicyError, KeyError) as e:
                log.warning("stored block no longer resolves", extra={"block": rec.get("id"), "error": str(e)})
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._loop_task = self._tg.create_task(self._run_loops())
        if self.controller is not None and self._store is not None:
            follower = PlacementFollower(self.controller, self, self.runtime, self._store)
            await follower.__aenter__()
            self.follower = follower
        if self.controller is not None and getattr(self.controller, "membership", None) is not None:
            self.forwarder = TaskForwarder(self.controller.membership, self._run_forwarded)
        for part in (self.network, self.scaler):
            if part is not None:
                await part.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for part in (self.scaler, self.network):
            if part is not None:
                await part.stop()
        follower, self.follower = self.follower, None
        if follower is not None:
            await follower.__aexit__(None, None, None)
        tg, self._tg = self._tg, None
        if tg is None:
            return
        if self._loop_task is not None:
            self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tg.__aexit__(None, None, None)

    # ----- lookups --------------------------------------------------------------------------
    def resolved(self, block_id: str) -> ResolvedBlock | None:
        return self._resolved.get(block_id)

    async def lookup(self, block_id: str) -> ResolvedBlock | None:
        """The block as this node knows it: applied here, followed here, or committed for the cluster."""
        res = self._resolved.get(block_id)
        if res is None and self.controller is not None:
            spec = self.controller.view().specs.get(block_id)
            if spec is not None:
                try:
                    res = await self.resolve_spec(block_id, spec)
                except (SpecError, PolicyError) as e:
                    log.warning("committed block does not resolve here", extra={"block": block_id, "error": str(e)})
        if res is None:  # placed in another cluster from here: the records this node stored
            rec = await self.registry.get(RecordKind.BLOCK, block_id)
            if rec is not None and rec.get("placement") == CLUSTER:
                with contextlib.suppress(SpecError, PolicyError, KeyError):
                    res = await self._resolve_stored(rec)
        return res

    def component(self, uri: str) -> ParsedComponent | None:
        return self._components.get(uri)

    def loop_state(self, block_id: str) -> BlockLoop | None:
        return self._loops.get(block_id)

    def registry_for(self, overrides: str | None) -> PolicyCatalog:
        """The policies a spec may name: built-ins (with a named override set, `aios-examples`, when
        asked) and the policies published on this node.

        Raises: SpecError naming the unknown set.
        """
        reg = self.policies
        if overrides:
            mapping = OVERRIDE_SETS.get(overrides)
            if mapping is None:
                raise SpecError.at("policy_overrides", f"{overrides!r} is not an override set; known: "
                                   f"{', '.join(OVERRIDE_SETS)}")
            reg = self.policies.with_overrides(mapping)
        if self.policy_svc is None:
            return reg
        return Catalog(reg, self.policy_svc.policies)

    async def hosts_elsewhere(self, block_id: str) -> set[str]:
        """Nodes of the other cluster that places `block_id` (empty: this cluster's, or this node's)."""
        cluster = await self._cluster_of(block_id)
        if self.controller is None or cluster is None or cluster == self.controller.cluster:
            return set()
        nodes: set[str] = self.controller.cluster_nodes(cluster)
        return nodes

    async def _component_doc(self, uri: str) -> ParsedComponent | None:
        comp = self._components.get(uri)
        if comp is None:
            rec = await self.registry.get(RecordKind.COMPONENT, uri)
            if rec is None and self.network is not None:  # applied on another (admin) node
                rec = await self.network.network_component(uri)
            if rec is not None:
                parsed = parse_document(rec["document"])
                if isinstance(parsed, ParsedComponent):
                    comp = self._components[uri] = parsed
        return comp

    async def _remember(self, rec: Mapping[str, Any]) -> None:
        bid = str(rec["id"])
        self._resolved[bid] = await self._resolve_stored(rec)
        self._loops[bid] = self._new_loop(self._resolved[bid])

    async def _resolve_stored(self, rec: Mapping[str, Any]) -> ResolvedBlock:
        """A stored block record, resolved against its stored component. Raises: SpecError,
        PolicyError, KeyError (the component is gone)."""
        parsed = parse_document(rec["document"])
        if not isinstance(parsed, ParsedBlock):
            raise SpecError.at("document", "is not a block")
        comp = await self._component_doc(parsed.spec.block_component_uri)
        if comp is None:
            raise KeyError(parsed.spec.block_component_uri)
        return self._resolve_record(str(rec["id"]), rec, parsed, comp)

    def _resolve_record(self, bid: str, rec: Mapping[str, Any], parsed: ParsedBlock, comp: ParsedComponent
                        ) -> ResolvedBlock:
        res = resolve_block(parsed, comp, catalog=self.registry_for(rec.get("policyOverrides") or None))
        return dataclasses.replace(res, block_id=bid, parameters={**res.parameters, **rec.get("parameters", {})})

    # ----- the follower's host (follow.BlockHost) -----------------------------------------
    async def ensure_image(self, res: ResolvedBlock, progress: Any = None) -> None:
        """Build the block's image from its blockDir when this node lacks it (podman driver).
        Raises: ImageUnavailable (no image and nothing to build it from), runtime build errors."""
        code = code_for(res, self.runtime.driver_name)
        if code.image is None:
            if progress is not None:
                await progress(f"block {res.block_id}: code from {code.block_dir}")
            return
        cli = await self.runtime.image_cli()
        if await image_exists(code.image, cli):
            if progress is not None:
                await progress(f"image {code.image} present")
            return
        if self.assets is not None and await self._published_image(code.image):
            if progress is not None:
                await progress(f"fetching image {code.image} from peers")
            try:
                if await ensure_image_from_peers(self.assets, code.image):
                    return
            except AiosdError as e:  # the peers' copy failed: building it here is still possible
                if block_dir_of(res)[0] is None:
                    raise ImageUnavailable(f"image {code.image!r}: {e}") from None
                log.warning("image from peers failed; building it", extra={"image": code.image, "error": str(e)})
        bdir, _ = block_dir_of(res)
        if bdir is None:
            raise ImageUnavailable(f"image {code.image!r} does not exist on node {self.node_id} and no blockDir "
                               "names its source; build or load it there (`aiosd image build|load`)")
        if progress is not None:
            await progress(f"building image {code.image} from {bdir}")
        await build_block(bdir, code.image, cli=cli)

    # ----- apply ----------------------------------------------------------------------------
    async def apply(self, text: str | bytes, *, dry_run: bool = False, overrides: str | None = None,
                    cluster: bool = False) -> dict[str, Any]:
        """Apply AIOS documents; all are checked before anything changes. `cluster`: blocks are
        placed by the cluster's controller instead of on this node.

        Returns {"documents": [{kind, id, action, ...}], "task": Task | None, "warnings": [...]}.
        Raises: SpecError (paths named), PlacementError, PolicyError, ClusterRefused.
        """
        if cluster and self.controller is None:
            raise ClusterRefused(503, "no_controller", "this node runs no controller service; apply without --cluster")
        docs = await asyncio.to_thread(split_documents, text)
        parsed: list[ParsedSpec] = []
        problems: list[Problem] = []
        for i, doc in enumerate(docs):
            try:
                if self.policy_svc is not None:  # a templateUri other than Parser/V1: its template converts it
                    doc = await self.policy_svc.convert(doc)
                parsed.append(await asyncio.to_thread(parse_document, doc))
            except SpecError as e:
                problems += prefix(e.problems, i, len(docs))
                continue
            problems += prefix(unstorable(parsed[-1].envelope.values, VALUES), i, len(docs))
        if problems:
            raise SpecError(problems)
        vdags = [p for p in parsed if isinstance(p, ParsedVdag)]
        if vdags and self.vdag_apply is not None:  # createvDAG documents go to the vdag role, after the rest
            rest: list[ParsedSpec] = [p for p in parsed if not isinstance(p, ParsedVdag)]
            out = await self._apply_parsed(rest, dry_run, overrides, cluster) if rest else {
                "dry_run": dry_run, "documents": [], "warnings": [], "task": None}
            out["documents"] += await self.vdag_apply(vdags, dry_run)
            return out
        return await self._apply_parsed(parsed, dry_run, overrides, cluster)

    async def _apply_parsed(self, parsed: list[ParsedSpec], dry_run: bool, overrides: str | None,
                            cluster: bool) -> dict[str, Any]:
        reg = self.registry_for(overrides)
        async with self._lock:
            plan = await self._plan(parsed, reg, overrides, dry_run, cluster)
            if dry_run:
                return {"dry_run": True, "documents": plan.documents, "warnings": plan.warnings, "task": None}
            for uri, rec in plan.components.items():
                await self.registry.put(RecordKind.COMPONENT, uri, rec)
                self._components[uri] = plan.parsed_components[uri]
            if plan.infra and self.network is not None:  # createCluster/addNode (blocks/infra.py)
                await self.network.put_infra(plan.infra)
            task = None
            starts = plan.blocks
            if cluster:
                return await self._apply_cluster(plan, starts)
            for bid, (rec, res) in starts.items():
                await self.registry.put(RecordKind.BLOCK, bid, rec)
                self._resolved[bid] = res
                self._loops[bid] = self._new_loop(res)
            if starts:
                target = ",".join(sorted(starts))
                task = await self.tasks.start("apply", target, lambda h: self._start_blocks(h, starts))
        return {"dry_run": False, "documents": plan.documents, "warnings": plan.warnings,
                "task": task.model_dump(mode="json") if task is not None else None}

    async def _start_blocks(self, h: TaskHandle, starts: Mapping[str, tuple[dict[str, Any], ResolvedBlock]]
                            ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for bid, (rec, res) in starts.items():
            code = code_for(res, self.runtime.driver_name)
            await self.ensure_image(res, h.progress)
            count = int(rec["desiredInstances"])
            async with self._lock:
                await self._set_count(bid, res, code, count, rebuild=True)
            await h.progress(f"block {bid}: {count} instance(s) starting")
            await self._wait_ready(h, bid, count)
            out[bid] = {"instances": count}
        return out

    async def _set_count(self, bid: str, res: ResolvedBlock, code: CodeRef, count: int,
                         victims: Sequence[str] = (), *, rebuild: bool = False) -> None:
        """Make the block run `count` instances. Kept instances keep their specs (no restart)
        unless `rebuild` (a changed block document: same ids, new specs, the supervisor replaces them)."""
        have = sorted(self.runtime.desired(bid), key=lambda s: s.instance_id)
        keep = [s for s in have if s.instance_id not in victims][:count]
        ids = instance_ids(bid, [s.instance_id for s in keep], count)
        if rebuild:
            keep = []
        fresh_ids = ids[len(keep):]
        pl = await self._place(res, len(fresh_ids), dry_run=False, exclude=bid) if fresh_ids else None
        fresh = instance_specs(res, bid, fresh_ids, pl.placements if pl else (), code, res.to_record())
        try:
            await self.runtime.set_desired(bid, [*keep, *fresh])
        except Exception as e:
            raise RuntimeRefused(f"block {bid}: the runtime refused the instances: {e}") from e

    async def _wait_ready(self, h: TaskHandle, bid: str, count: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        seen = -1
        while True:
            rows = [s for s in self.runtime.sup.status() if s.block_id == bid]
            healthy = sum(1 for s in rows if s.state is InstanceState.HEALTHY)
            if healthy != seen:
                seen = healthy
                await h.progress(f"block {bid}: {healthy}/{count} healthy")
            if healthy >= count:
                return
            bad = [s for s in rows if s.state in (InstanceState.CRASHLOOP, InstanceState.FAILED)]
            if bad:
                tail = " | ".join(bad[0].last_log_lines[-3:])
                raise InstanceFailed(f"block {bid}: instance {bad[0].instance_id} is {bad[0].state.value}"
                                   f"{': ' + bad[0].error if bad[0].error else ''}{' (last output: ' + tail + ')' if tail else ''}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"block {bid}: {healthy}/{count} instances healthy after {READY_TIMEOUT_S:g}s")
            await self.runtime.settle()

    async def set_parameters(self, bid: str, parameters: Mapping[str, Any]) -> None:
        """Record live-updated parameters (the instances got them through on_update already)."""
        async with self._lock:
            res = self._resolved.get(bid)
            rec = await self.registry.get(RecordKind.BLOCK, bid)
            if res is None or rec is None:
                raise KeyError(bid)
            rec["parameters"] = dict(parameters)
            await self.registry.put(RecordKind.BLOCK, bid, rec)
            self._resolved[bid] = dataclasses.replace(res, parameters=dict(parameters))

    # ----- scale / delete -------------------------------------------------------------------
    async def scale(self, bid: str, count: int, victims: Sequence[str] = (), why: str = "mgmt") -> dict[str, Any]:
        """Run `count` instances of the block (within minInstances..maxInstances).

        Raises: KeyError (no block), SpecError (count out of range).
        """
        async with self._lock:
            res = self._resolved.get(bid) or await self.lookup(bid)
            if res is None:
                raise KeyError(bid)
            if not res.min_instances <= count <= res.max_instances:
                raise SpecError.at("mgmtData.instances", f"must be within minInstances..maxInstances "
                                   f"({res.min_instances}..{res.max_instances}), got {count}")
            if why == "mgmt":  # the autoscaler's own decisions are the block's policy already
                checked = await self.precheck("scale_block", {"block_id": bid, "instances": count}, ("instances",))
                count = checked_count(checked["instances"], res, "scale_block")
            target = await self._cluster_of(bid)
            if target is not None:
                return await self._scale_cluster(bid, res, count, target)
            rec = await self.registry.get(RecordKind.BLOCK, bid)
            if rec is None:
                raise KeyError(bid)
            before = len(self.runtime.desired(bid))
            code = code_for(res, self.runtime.driver_name)
            await self._set_count(bid, res, code, count, victims)
            rec["desiredInstances"] = count
            await self.registry.put(RecordKind.BLOCK, bid, rec)
            st = self._loops.get(bid)
            if st is not None and why == "mgmt":  # a person chose this count: the autoscaler holds off
                st.next_autoscale = time.monotonic() + max(st.autoscale_every_s, st.hold_s)
                st.last_decision = f"held {st.hold_s:g}s after a manual scale to {count}"
        log.info("block scaled", extra={"block": bid, "from": before, "to": count, "why": why})
        return {"block_id": bid, "from": before, "to": count}

    async def delete(self, kind: RecordKind, key: str) -> dict[str, Any]:
        """Remove a record; a block's instances are stopped and removed first.

        Raises: KeyError (no such record), SpecError (a component still used by blocks).
        """
        async with self._lock:
            cluster = await self._cluster_of(key) if kind is RecordKind.BLOCK else None
            networked = kind is RecordKind.COMPONENT and self.network is not None and \
                await self.network.network_component(key) is not None
            if await self.registry.get(kind, key) is None and cluster is None and not networked:
                raise KeyError(key)
            await self.precheck("remove_block" if kind is RecordKind.BLOCK else "remove_component",
                                {"block_id" if kind is RecordKind.BLOCK else "uri": key})
            if kind is RecordKind.COMPONENT:
                users = [b["id"] for b in await self.registry.list(RecordKind.BLOCK) if b.get("componentUri") == key]
                if users:
                    raise SpecError.at("id", f"component {key!r} is used by blocks {', '.join(map(str, users))}; "
                                       "delete them first")
                await self.registry.delete(kind, key)
                if networked and self.network is not None:  # WriteRefused: only an admin node removes it
                    await self.network.delete_component(key)
                self._components.pop(key, None)
                return {"kind": kind.value, "id": key, "deleted": True}
            if cluster is not None:  # every node stops its instances once the removal commits
                await self._submit(ForwardRequest(op="remove", cluster=cluster, block_id=key))
                if self.follower is not None:
                    self.follower.poke()
            await self.runtime.set_desired(key, [])
            self._resolved.pop(key, None)
            self._loops.pop(key, None)
            await self.registry.delete(kind, key)
        deadline = time.monotonic() + REMOVE_TIMEOUT_S
        while any(s.block_id == key for s in self.runtime.sup.status()) or \
                any(o.block_id == key for o in (await self.runtime.owned()).values()):
            if time.monotonic() > deadline:
                return {"kind": kind.value, "id": key, "deleted": True, "note": "instances still stopping"}
            await self.runtime.settle()
        return {"kind": kind.value, "id": key, "deleted": True}

BLOCKS_KEY: ServiceKey[BlockService] = ServiceKey("blocks")


def block_service(ctx: NodeContext) -> BlockService:
    runtime = ctx.get(RUNTIME_KEY)
    svc = BlockService(BlockCatalog(ctx.store), runtime, ctx.get(TASKS_KEY), ctx.identity.node_id,
                       ctx.find(CONTROLLER_KEY), ctx.store, ctx.find(POLICIES_KEY))
    svc.assets = ctx.find(ASSETS_KEY)
    reg = ctx.find(REGISTRY_KEY)
    if reg is not None:
        svc.network = NetworkRecords(reg, svc.registry, ctx.identity.node_id, ctx.identity.cert.cluster,
                                     lambda: runtime.sup.status(), svc.controller)
        if svc.controller is not None:
            svc.scaler = ClusterScaler(svc, svc.controller, reg)
    return svc


__all__ = ["BLOCKS_KEY", "OVERRIDE_SETS", "BlockService", "block_service", "canonical", "unstorable"]
