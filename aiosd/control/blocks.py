"""The block service: apply/delete/scale AIOS specs on this node, plus the autoscaler and health loops.

Apply = parse → validate → policies registered → store component → resolve block → place on
this node → instance specs → supervisor.set_desired, reported as a Task. All checks run before
anything is stored, so a rejected document changes nothing. One lock serialises changes.
Inference and management requests are served by aiosd.api.specs_api through this service.

`apply(cluster=True)` (`aiosd apply --cluster`) places the block across the cluster instead: the
same checks, then the block travels with a placement request to the elected controller (through
the gateway, so any node accepts it); every node runs what the committed state places on it
(follow.py). Scale and delete of such a block go to the controller too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from aiosd.catalog import RecordKind, Registry
from aiosd.control.apply import (
    INITIAL_FLOOR,
    CodeRef,
    block_dir_of,
    code_for,
    instance_ids,
    instance_specs,
    local_node_view,
)
from aiosd.control.cluster_state import Allocator, BlockSpec, json_form
from aiosd.control.controller_wire import DryRunRequest, ForwardAnswer, ForwardRequest, PlaceRequest
from aiosd.control.errors import ClusterRefused
from aiosd.control.follow import PlacementFollower
from aiosd.control.placement import Assignment, PlacementResult, place
from aiosd.errors import AiosdError
from aiosd.image_dist import IMAGES
from aiosd.policies import (
    AIOS_EXAMPLE_OVERRIDES,
    PolicyHandle,
    PolicyRunner,
    builtin_registry,
)
from aiosd.policies.errors import PolicyError, PolicyOutputError, PolicyVetoed
from aiosd.policies.runner import Catalog
from aiosd.runtime_service import RuntimeService
from aiosd.specs import ParsedBlock, ParsedComponent, ParsedMgmt, ParsedSpec, ResolvedBlock, SpecError
from aiosd.specs.errors import Problem, join_path
from aiosd.specs.parse import parse_document, split_documents
from aiosd.specs.resolve import MAX_LISTED_URIS, PolicyCatalog, PolicySlot, component_policies, resolve_block
from aiosd.tasks import TaskHandle, TaskService
from runtime import InstanceState, build_block, image_exists
from storage import Store

log = logging.getLogger(__name__)

VALUES = "body.spec.values"
OVERRIDE_SETS: Mapping[str, Mapping[str, str]] = {"aios-examples": AIOS_EXAMPLE_OVERRIDES}
LOOP_TICK_S = 0.2  # how often the autoscaler/health loop looks for due blocks; also the load sample rate
DEFAULT_AUTOSCALE_INTERVAL_S = 10.0
READY_TIMEOUT_S = 120.0  # instances starting → healthy, per apply task
REMOVE_TIMEOUT_S = 30.0
HEALTH_PROBE_TIMEOUT_S = 5.0  # the SDK answers /health from a separate pool; 5 s means it is stuck
# A block travels in one Raft entry (max_command_bytes 512 KiB with the lan profile): leave room.
MAX_CLUSTER_SPEC_BYTES = 256 << 10
CLUSTER = "cluster"  # the block record's "placement" when the cluster controller places it


def canonical(doc_values: Mapping[str, Any], template_uri: str) -> dict[str, Any]:
    """The stored form of a document: the AIOS envelope around its values."""
    return {"header": {"templateUri": template_uri, "parameters": {}}, "body": {"spec": {"values": dict(doc_values)}}}


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


def _prefix(problems: Sequence[Problem], i: int, n: int) -> list[Problem]:
    if n == 1:
        return list(problems)
    return [Problem(f"documents[{i}].{p.path}" if p.path else f"documents[{i}]", p.message) for p in problems]


@dataclasses.dataclass(slots=True)
class _Loop:
    """Per-block autoscaler/health state (policy handles keep their cooldown/retry state)."""

    autoscaler: Any = None  # PolicyHandle (built-in) or AsyncPolicyHandle (published, in the sandbox)
    autoscale_every_s: float = DEFAULT_AUTOSCALE_INTERVAL_S
    next_autoscale: float = 0.0
    peak: dict[str, int] = dataclasses.field(default_factory=dict)
    health: Any = None
    pending: dict[str, tuple[PolicySlot, str]] = dataclasses.field(default_factory=dict)  # published: loaded on first turn
    health_every_s: float = 10.0
    next_health: float = 0.0
    given_up: dict[str, str] = dataclasses.field(default_factory=dict)
    last_decision: str = ""
    hold_s: float = 60.0  # after a manual scale the autoscaler waits this long (its downscale cooldown)


class BlockService:
    name = "blocks"

    def __init__(self, registry: Registry, runtime: RuntimeService, tasks: TaskService, node_id: str,
                 controller: Any = None, store: Store | None = None, policy_service: Any = None) -> None:
        self.registry = registry
        self.runtime = runtime
        self.tasks = tasks
        self.node_id = node_id
        self.controller = controller  # ControllerService, or None on a node without one
        self.follower: PlacementFollower | None = None
        self._store = store
        # The policies service (published policies, templates, governance); None = built-ins only.
        self.policy_svc = policy_service
        self.assets: Any = None  # the assets service (images published by peers), set by block_service()
        self._lb: dict[str, tuple[str, Any]] = {}  # block -> (configuration key, published LB policy handle)
        self.policies = builtin_registry()
        self._resolved: dict[str, ResolvedBlock] = {}
        self._components: dict[str, ParsedComponent] = {}
        self._loops: dict[str, _Loop] = {}
        self._lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._loop_task: asyncio.Task[None] | None = None

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
        return self

    async def __aexit__(self, *exc: object) -> None:
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

    def routes(self) -> list[Any]:
        from aiosd.api.specs_api import spec_routes

        return spec_routes(self)

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
        return res

    def component(self, uri: str) -> ParsedComponent | None:
        return self._components.get(uri)

    def loop_state(self, block_id: str) -> _Loop | None:
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

    # ----- published policies: load balancing, governance ------------------------------------
    async def choose_instance(self, bid: str, res: ResolvedBlock, packet: Mapping[str, Any]) -> str | None:
        """The instance a published loadBalancer policy picks for `packet`; None when the block uses a
        built-in one (the runtime's balancer implements those natively) or has no healthy instance.
        Raises: PolicyError (the policy failed or answered an instance that is not a healthy one)."""
        slot = res.policy("loadBalancer")
        if slot is None or self.policy_svc is None or self.policies.find(slot.uri) is not None:
            return None
        healthy = [iid for iid, _ in self.runtime.sup.healthy(bid)]
        if not healthy:
            return None
        key = json.dumps([slot.uri, slot.parameters, slot.settings], sort_keys=True, default=str)
        cached = self._lb.get(bid)
        if cached is None or cached[0] != key:
            handle = await self.policy_svc.runner.load(slot.uri, parameters=dict(slot.parameters),
                                                       settings=dict(slot.settings), rule_id=f"{bid}/loadBalancer")
            cached = self._lb[bid] = (key, handle)
        bal = self.runtime.balancer
        out = await cached[1].eval({"mode": "load_balance", "packet": dict(packet), "instances": [
            {"instance_id": iid, "outstanding": bal.outstanding(iid) if bal is not None else 0} for iid in healthy]})
        iid = out.get("instance_id")
        if iid not in healthy:
            raise PolicyOutputError(slot.uri, f"instance_id {str(iid)[:80]!r} is not one of the healthy instances "
                                    f"{', '.join(healthy[:10])}")
        return str(iid)

    async def precheck(self, action: str, payload: dict[str, Any], may_rewrite: tuple[str, ...] = ()
                       ) -> dict[str, Any]:
        """The governance pre-check of `action` (a no-op without one mapped). Only the keys in
        `may_rewrite` may change; any other rewrite is refused, so a policy cannot slip past the
        checks that already ran. Raises: PolicyVetoed."""
        if self.policy_svc is None:
            return payload
        out: dict[str, Any] = await self.policy_svc.precheck(action, payload)
        changed = sorted(k for k in {*payload, *out} if k not in may_rewrite and out.get(k) != payload.get(k))
        if changed:
            uri = self.policy_svc.governance.mapping.get(action, "?")
            raise PolicyVetoed(action, uri, f"it rewrote {', '.join(changed)}; for {action} only "
                               f"{', '.join(may_rewrite) or 'nothing'} may be rewritten")
        return out

    async def _component_doc(self, uri: str) -> ParsedComponent | None:
        comp = self._components.get(uri)
        if comp is None:
            rec = await self.registry.get(RecordKind.COMPONENT, uri)
            if rec is not None:
                parsed = parse_document(rec["document"])
                if isinstance(parsed, ParsedComponent):
                    comp = self._components[uri] = parsed
        return comp

    async def _remember(self, rec: Mapping[str, Any]) -> None:
        parsed = parse_document(rec["document"])
        if not isinstance(parsed, ParsedBlock):
            raise SpecError.at("document", "is not a block")
        comp = await self._component_doc(parsed.spec.block_component_uri)
        if comp is None:
            raise KeyError(parsed.spec.block_component_uri)
        bid = str(rec["id"])
        self._resolved[bid] = self._resolve_record(bid, rec, parsed, comp)
        self._loops[bid] = self._new_loop(self._resolved[bid])

    def _resolve_record(self, bid: str, rec: Mapping[str, Any], parsed: ParsedBlock, comp: ParsedComponent
                        ) -> ResolvedBlock:
        res = resolve_block(parsed, comp, catalog=self.registry_for(rec.get("policyOverrides") or None))
        return dataclasses.replace(res, block_id=bid, parameters={**res.parameters, **rec.get("parameters", {})})

    # ----- the follower's host (follow.BlockHost) -----------------------------------------
    async def resolve_spec(self, block_id: str, spec: BlockSpec) -> ResolvedBlock:
        """The block a committed placement names, resolved on this node. Raises: SpecError, PolicyError."""
        def go() -> ResolvedBlock:
            block, component = json_form(spec.block), json_form(spec.component)
            parsed = parse_document(block.get("document"))
            comp = parse_document(component.get("document"))
            if not isinstance(parsed, ParsedBlock) or not isinstance(comp, ParsedComponent):
                raise SpecError.at("spec", "the placement's spec is not a block and its component")
            return self._resolve_record(block_id, block, parsed, comp)

        return await asyncio.to_thread(go)

    async def ensure_image(self, res: ResolvedBlock, progress: Any = None) -> None:
        """Build the block's image from its blockDir when this node lacks it (podman driver).
        Raises: RuntimeError (no image and nothing to build it from), runtime build errors."""
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
                if await self.assets.ensure_image_from_peers(code.image):
                    return
            except AiosdError as e:  # the peers' copy failed: building it here is still possible
                if block_dir_of(res)[0] is None:
                    raise RuntimeError(f"image {code.image!r}: {e}") from None
                log.warning("image from peers failed; building it", extra={"image": code.image, "error": str(e)})
        bdir, _ = block_dir_of(res)
        if bdir is None:
            raise RuntimeError(f"image {code.image!r} does not exist on node {self.node_id} and no blockDir "
                               "names its source; build or load it there (`aiosd image build|load`)")
        if progress is not None:
            await progress(f"building image {code.image} from {bdir}")
        await build_block(bdir, code.image, cli=cli)

    def followed(self, block_id: str, res: ResolvedBlock | None) -> None:
        """The follower runs (res) or stopped running (None) this cluster block here."""
        if res is None:
            if block_id not in self._loops:  # not a block applied on this node
                self._resolved.pop(block_id, None)
            return
        self._resolved[block_id] = res

    def _new_loop(self, block: ResolvedBlock) -> _Loop:
        st = _Loop()
        runner = PolicyRunner(self.policies)
        a = block.policy("autoscaler")
        if a is not None:
            if self._published(a.uri):
                st.pending["autoscaler"] = (a, f"{block.block_id}/autoscaler")
            else:
                st.autoscaler = self._load(runner, a.uri, a.parameters, a.settings, f"{block.block_id}/autoscaler")
            every = a.settings.get("intervalSeconds", a.parameters.get("intervalSeconds", DEFAULT_AUTOSCALE_INTERVAL_S))
            st.autoscale_every_s = float(every) if isinstance(every, int | float) and every > 0 else \
                DEFAULT_AUTOSCALE_INTERVAL_S
            st.next_autoscale = time.monotonic() + st.autoscale_every_s
            hold = {**a.settings, **a.parameters}.get("scale_down_cooldown", 60.0)
            st.hold_s = float(hold) if isinstance(hold, int | float) and hold >= 0 else 60.0
        h = block.policy("stabilityChecker")
        if h is not None:
            if self._published(h.uri):
                st.pending["health"] = (h, f"{block.block_id}/stabilityChecker")
            else:
                st.health = self._load(runner, h.uri, h.parameters, h.settings, f"{block.block_id}/stabilityChecker")
            every = h.settings.get("health_check_interval", h.settings.get("check_interval_sec", 10))
            st.health_every_s = float(every) if isinstance(every, int | float) and every > 0 else 10.0
            st.next_health = time.monotonic() + st.health_every_s
        return st

    def _published(self, uri: str) -> bool:
        return self.policy_svc is not None and self.policies.find(uri) is None

    async def _load_pending(self, bid: str, st: _Loop) -> None:
        """Load the block's published autoscaler/health policies into the sandbox (first turn)."""
        for name, (slot, rule_id) in list(st.pending.items()):
            del st.pending[name]
            try:
                handle = await self.policy_svc.runner.load(slot.uri, parameters=dict(slot.parameters),
                                                           settings=dict(slot.settings), rule_id=rule_id)
            except PolicyError as e:
                log.error("block policy not loaded", extra={"block": bid, "policy": slot.uri, "error": str(e)})
                st.last_decision = f"{name} policy {slot.uri} not loaded: {e}"
                continue
            setattr(st, name, handle)

    @staticmethod
    def _load(runner: PolicyRunner, uri: str, parameters: Mapping[str, Any], settings: Mapping[str, Any],
              rule_id: str) -> PolicyHandle | None:
        # Cooldowns live in settings in the AIOS examples but the built-in reads parameters: pass both.
        try:
            return runner.load(uri, parameters={**settings, **parameters}, settings=settings, rule_id=rule_id)
        except PolicyError as e:
            try:
                return runner.load(uri, parameters=parameters, settings=settings, rule_id=rule_id)
            except PolicyError:
                log.warning("policy not loaded", extra={"policy": uri, "error": str(e)})
                return None

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
                problems += _prefix(e.problems, i, len(docs))
                continue
            problems += _prefix(unstorable(parsed[-1].envelope.values, VALUES), i, len(docs))
        if problems:
            raise SpecError(problems)
        reg = self.registry_for(overrides)
        async with self._lock:
            plan = await self._plan(parsed, reg, overrides, dry_run, cluster)
            if dry_run:
                return {"dry_run": True, "documents": plan["documents"], "warnings": plan["warnings"], "task": None}
            for uri, rec in plan["components"].items():
                await self.registry.put(RecordKind.COMPONENT, uri, rec)
                self._components[uri] = plan["parsed_components"][uri]
            task = None
            starts = plan["blocks"]
            if cluster:
                return await self._apply_cluster(plan, starts)
            for bid, (rec, res) in starts.items():
                await self.registry.put(RecordKind.BLOCK, bid, rec)
                self._resolved[bid] = res
                self._loops[bid] = self._new_loop(res)
            if starts:
                target = ",".join(sorted(starts))
                task = await self.tasks.start("apply", target, lambda h: self._start_blocks(h, starts))
        return {"dry_run": False, "documents": plan["documents"], "warnings": plan["warnings"],
                "task": task.model_dump(mode="json") if task is not None else None}

    async def _apply_cluster(self, plan: dict[str, Any], starts: Mapping[str, tuple[dict[str, Any], ResolvedBlock]]
                             ) -> dict[str, Any]:
        """Send each changed block to the controller (caller holds the lock); records are stored
        once the controller has committed the placement."""
        placed: dict[str, Any] = {}
        for bid, (rec, res) in starts.items():
            comp = plan["components"].get(res.component_uri) or await self.registry.get(RecordKind.COMPONENT,
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
            self._resolved[bid] = res
            placed[bid] = {**answer.result, "cluster": target}
        for d in plan["documents"]:
            if d["kind"] == "block" and d["id"] in placed:
                d["placement"] = {"cluster": True, "clusterId": placed[d["id"]]["cluster"],
                                  "term": placed[d["id"]].get("term"),
                                  "placements": placed[d["id"]].get("instances", [])}
        if self.follower is not None:
            self.follower.poke()
        return {"dry_run": False, "documents": plan["documents"], "warnings": plan["warnings"], "task": None}

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

    async def _plan(self, parsed: list[ParsedSpec], reg: PolicyCatalog, overrides: str | None,
                    dry_run: bool, cluster: bool = False) -> dict[str, Any]:
        n = len(parsed)
        problems: list[Problem] = []
        out_docs: list[dict[str, Any]] = []
        warnings: list[str] = []
        comps: dict[str, dict[str, Any]] = {}
        parsed_comps: dict[str, ParsedComponent] = {}
        blocks: dict[str, tuple[dict[str, Any], ResolvedBlock]] = {}
        rec: dict[str, Any]
        for i, p in enumerate(parsed):
            if isinstance(p, ParsedComponent):
                slots, _ = component_policies(p.spec)
                for name, rule in slots.items():
                    if reg.find(rule.policy_rule_uri) is None:
                        problems += _prefix([self._unregistered(reg, f"{VALUES}.policies.{name}.policyRuleURI",
                                                                rule.policy_rule_uri)], i, n)
                rec = {"uri": p.key, "document": canonical(p.envelope.values, p.envelope.template_uri)}
                old = await self.registry.get(RecordKind.COMPONENT, p.key)
                action = "unchanged" if old == rec else ("configured" if old else "created")
                comps[p.key] = rec
                parsed_comps[p.key] = p
                out_docs.append({"kind": "component", "id": p.key, "action": action})
        for i, p in enumerate(parsed):
            if isinstance(p, ParsedComponent):
                continue
            if not isinstance(p, ParsedBlock):
                what = "management commands go to `aiosd mgmt` / POST /v1/mgmt/block/{id}" \
                    if isinstance(p, ParsedMgmt) else "only components and blocks are applied on a node for now"
                problems += _prefix([Problem("", f"kind {p.kind!r} cannot be applied here: {what}")], i, n)
                continue
            uri = p.spec.block_component_uri
            comp = parsed_comps.get(uri) or await self._component_doc(uri)
            if comp is None:
                problems += _prefix([Problem(f"{VALUES}.blockComponentURI",
                                             f"component {uri!r} does not exist; apply it first (or in the "
                                             "same file)")], i, n)
                continue
            try:
                res = resolve_block(p, comp, catalog=reg)
            except SpecError as e:
                problems += _prefix(e.problems, i, n)
                continue
            bid = p.key or (comp.spec.component_id.name + "-" + hashlib.sha256(
                json.dumps(p.envelope.values, sort_keys=True).encode()).hexdigest()[:8])
            res = dataclasses.replace(res, block_id=bid)
            try:
                code = code_for(res, self.runtime.driver_name)
                await self._check_image(code, res)
            except SpecError as e:
                if not dry_run:  # a dry run validates the spec; a missing image is only reported
                    problems += _prefix(e.problems, i, n)
                    continue
                warnings += [f"block {bid}: {pr}" for pr in e.problems]
                code = CodeRef(image=res.image, block_dir=None, source="missing")
            warnings += [str(w) for w in res.warnings]
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
            if cluster:  # the controller places it; a dry run asks it for candidates and scores
                placement: dict[str, Any] = {"cluster": True}
                if dry_run:
                    target = await self._target_cluster(bid, res, count)
                    placement = {**(await self._submit(ForwardRequest(op="dry_run", cluster=target, dry_run=DryRunRequest(
                        block_id=bid, count=max(count, 1), allocator=allocator_of(res))))).result, "clusterId": target}
            else:
                placement = _placement_json(await self._place(res, count, dry_run=dry_run, exclude=bid))
            doc: dict[str, Any] = {"kind": "block", "id": bid, "component": uri, "instances": count,
                                   "code": {"image": code.image, "blockDir": str(code.block_dir or ""),
                                            "source": code.source},
                                   "placement": placement}
            if same and running == count:
                doc["action"] = "unchanged"
            else:
                doc["action"] = "configured" if old else "created"
                checked = await self.precheck("add_block", {"block_id": bid, "component_uri": uri, "instances": count,
                                                            "values": dict(p.envelope.values)}, ("instances",))
                if checked["instances"] != count:
                    count = _count(checked["instances"], res, "add_block")
                    doc["instances"] = count
                rec.update(desiredInstances=count, code=doc["code"])
                if same and old is not None:  # parameters changed live (mgmt) survive a re-apply
                    rec["parameters"] = old.get("parameters", rec["parameters"])
                    res = dataclasses.replace(res, parameters=rec["parameters"])
                blocks[bid] = (rec, res)
            out_docs.append(doc)
        if problems:
            raise SpecError(problems)
        if dry_run:
            for d in out_docs:
                d["action"] = "would be " + d["action"] if d["action"] != "unchanged" else "unchanged"
        return {"documents": out_docs, "warnings": warnings, "components": comps, "parsed_components": parsed_comps,
                "blocks": blocks}

    @staticmethod
    def _unregistered(reg: PolicyCatalog, path: str, uri: str) -> Problem:
        known = reg.known_uris()
        listed = ", ".join(known[:MAX_LISTED_URIS]) + (" ..." if len(known) > MAX_LISTED_URIS else "")
        return Problem(path, f"policy {uri!r} is not registered; registered: {listed or 'none'}")

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
        assignments = [Assignment(block_id=s.block_id, instance_id=s.instance_id)
                       for s in self.runtime.sup.status() if s.block_id != exclude]
        metrics = await self.runtime.inventory.ametrics() if self.runtime.gpu_info else []
        view = await asyncio.to_thread(local_node_view, self.node_id, self.runtime.gpu_info, metrics, assignments)
        return await asyncio.to_thread(place, res, [view], count, PolicyRunner(self.policies), dry_run)

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
            raise RuntimeError(f"block {bid}: the runtime refused the instances: {e}") from e

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
                raise RuntimeError(f"block {bid}: instance {bad[0].instance_id} is {bad[0].state.value}"
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
                count = _count(checked["instances"], res, "scale_block")
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

    async def delete(self, kind: RecordKind, key: str) -> dict[str, Any]:
        """Remove a record; a block's instances are stopped and removed first.

        Raises: KeyError (no such record), SpecError (a component still used by blocks).
        """
        async with self._lock:
            cluster = await self._cluster_of(key) if kind is RecordKind.BLOCK else None
            if await self.registry.get(kind, key) is None and cluster is None:
                raise KeyError(key)
            await self.precheck("remove_block" if kind is RecordKind.BLOCK else "remove_component",
                                {"block_id" if kind is RecordKind.BLOCK else "uri": key})
            if kind is RecordKind.COMPONENT:
                users = [b["id"] for b in await self.registry.list(RecordKind.BLOCK) if b.get("componentUri") == key]
                if users:
                    raise SpecError.at("id", f"component {key!r} is used by blocks {', '.join(map(str, users))}; "
                                       "delete them first")
                await self.registry.delete(kind, key)
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

    # ----- autoscaler and health loops ------------------------------------------------------
    async def _run_loops(self) -> None:
        while True:
            await asyncio.sleep(LOOP_TICK_S)
            now = time.monotonic()
            for bid, st in list(self._loops.items()):
                try:
                    await self._loop_turn(bid, st, now)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one block's turn; the loop keeps serving the others
                    log.exception("block loop turn failed", extra={"block": bid})

    async def _loop_turn(self, bid: str, st: _Loop, now: float) -> None:
        res = self._resolved.get(bid)
        if res is None:
            return
        if st.pending:
            await self._load_pending(bid, st)
        rows = [s for s in self.runtime.sup.status() if s.block_id == bid]
        bal = self.runtime.balancer
        for s in rows:
            q = bal.outstanding(s.instance_id) if bal is not None else 0
            st.peak[s.instance_id] = max(st.peak.get(s.instance_id, 0), q)
        if st.autoscaler is not None and now >= st.next_autoscale:
            st.next_autoscale = now + st.autoscale_every_s
            load = [{"instance_id": s.instance_id, "queue_length": st.peak.get(s.instance_id, 0), "utilization": 0.0}
                    for s in rows]
            st.peak.clear()
            out = await _answer(st.autoscaler.eval({"block_data": {"minInstances": res.min_instances,
                                                                   "maxInstances": res.max_instances, "instances": load},
                                                    "now": now}))
            st.last_decision = str(out.get("reason", ""))
            if not out.get("skip", True) and not self._lock.locked():
                cur = len(rows)
                if out.get("operation") == "upscale":
                    want = min(res.max_instances, cur + int(out.get("instances_count", 1)))
                    if want != cur:
                        await self.scale(bid, want, why="autoscaler: " + st.last_decision)
                elif out.get("operation") == "downscale":
                    victims = [str(v) for v in out.get("instances_list", [])]
                    want = max(res.min_instances, cur - len(victims))
                    if want != cur:
                        await self.scale(bid, want, victims, why="autoscaler: " + st.last_decision)
        if st.health is not None and now >= st.next_health:
            st.next_health = now + st.health_every_s
            # The policy judges the instances' own /health answers (the supervisor probes too, for
            # its restarts with back-off); stopped or failed instances have nothing to answer.
            live = [s for s in rows if s.endpoint is not None
                    and s.state not in (InstanceState.STOPPED, InstanceState.FAILED)]
            client = self.runtime.client
            if client is None:
                return
            answers = await asyncio.gather(*(client.health(s.endpoint, HEALTH_PROBE_TIMEOUT_S) for s in live
                                             if s.endpoint is not None))
            data = {s.instance_id: ok for s, ok in zip(live, answers, strict=True)}
            out = await _answer(st.health.eval({"health_check_data": data}))
            for act in out.get("actions", []):
                iid, what = str(act.get("instance_id")), act.get("action")
                if what == "give_up":
                    st.given_up[iid] = str(act.get("reason", ""))
                    log.error("instance given up", extra={"block": bid, "instance": iid, "reason": act.get("reason")})
                else:  # the supervisor restarts unhealthy instances itself, with back-off
                    log.warning("instance unhealthy", extra={"block": bid, "instance": iid,
                                                             "reason": act.get("reason")})


async def _answer(out: Any) -> dict[str, Any]:
    """A policy's answer, whether the handle is a built-in (a dict) or a sandboxed one (awaitable)."""
    got = await out if inspect.isawaitable(out) else out
    return got if isinstance(got, dict) else {}


def _count(value: Any, res: ResolvedBlock, action: str) -> int:
    """An instance count a pre-check rewrote, checked like the user's own. Raises: SpecError."""
    if not isinstance(value, int) or isinstance(value, bool) or not res.min_instances <= value <= res.max_instances:
        raise SpecError.at("instances", f"the {action} pre-check rewrote the instance count to {str(value)[:40]}; it "
                           f"must be an integer within minInstances..maxInstances ({res.min_instances}.."
                           f"{res.max_instances})")
    return value


def allocator_of(res: ResolvedBlock) -> Allocator:
    """The block's resourceAllocator slot as the controller keeps it (default: best-fit)."""
    slot = res.policy("resourceAllocator")
    if slot is None:
        return Allocator()
    return Allocator(uri=slot.uri, parameters=dict(slot.parameters), settings=dict(slot.settings))


def _placement_json(p: PlacementResult) -> dict[str, Any]:
    return {"policy": p.policy_uri, "requested": p.requested, "score": p.score, "unmet": p.unmet,
            "requirement": p.requirement.describe(),
            "placements": [{"node_id": x.node_id, "gpus": list(x.gpus)} for x in p.placements],
            "candidates": [{"node_id": c.node_id, "score": c.score, "capacity": c.capacity, "reason": c.reason}
                           for c in p.candidates]}


def block_service(ctx: Any) -> BlockService:
    svc = BlockService(Registry(ctx.store), ctx.get("runtime"), ctx.get("tasks"), ctx.identity.node_id,
                       ctx.services.get("controller"), ctx.store, ctx.services.get("policies"))
    svc.assets = ctx.services.get("assets")
    return svc


__all__ = ["OVERRIDE_SETS", "BlockService", "block_service", "canonical", "unstorable"]
