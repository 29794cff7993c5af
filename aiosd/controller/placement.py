"""The placement seam: a pure scheduler that runs a block's `resourceAllocator` policy.

`place(block, nodes, count, runner)` returns instance placements (node + GPU indices) and never
changes its inputs; committing them (Raft, registries) is the caller's job. Per placement the
cost is O(log nodes): free resources are kept per node and only the node just used is re-keyed
in a sorted index, which built-in allocators read through the policy `context`. `PlacementRun`
checks and reserves each answer; published allocators (sandboxed, awaited) reuse it from
published_allocator.py, so `place()` itself only ever runs built-ins, in process.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosd.controller.errors import PlacementError
from aiosd.policies.builtin.allocation import (
    BEST_FIT_URI,
    CPU_URI,
    Requirement,
    node_choice,
    requirement_from,
)
from aiosd.policies.errors import PolicyInputError, PolicyOutputError
from aiosd.policies.loading import PolicyRunner
from aiosd.specs.resolve import ResolvedBlock

# Why 10,000: matches specs.block.MAX_INSTANCES; one call never plans more than a block may hold.
MAX_COUNT = 10_000
# Why 5: enough per-node reasons to see the pattern; the message stays one screen.
MAX_REASONS = 5


@dataclass(frozen=True, slots=True)
class GpuView:
    index: int
    memory_total_mb: float
    memory_free_mb: float
    util_pct: float = 0.0  # 0..100, as NVML reports
    uuid: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Assignment:
    """An instance already placed on a node (committed, maybe not yet running): its reservation."""

    block_id: str
    instance_id: str
    gpus: tuple[int, ...] = ()
    vcpus: float = 0.0
    memory_mb: float = 0.0
    gpu_memory_mb: float = 0.0  # per GPU in `gpus`
    exclusive: bool = False  # holds its GPUs alone


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    cluster: str = ""
    alive: bool = True
    vcpus: float = 0.0
    memory_mb: float = 0.0
    gpus: tuple[GpuView, ...] = ()
    assignments: tuple[Assignment, ...] = ()
    memory_free_mb: float | None = None  # measured, when metrics have it


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """Dry-run view of one node: how many instances it could take alone, as a 0..1 score."""

    node_id: str
    score: float
    capacity: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PlacementResult:
    placements: tuple[Placement, ...]
    requested: int
    policy_uri: str
    requirement: Requirement
    dry_run: bool = False
    score: float = 1.0  # placed / requested (1.0 when all fit)
    candidates: tuple[Candidate, ...] = field(default=())
    unmet: str = ""  # why the rest did not fit ("" when all did)

    def aios_dry_run(self) -> dict[str, Any]:
        """The AIOS resource-allocator dry-run answer: `{selection_score_data{score, node_info}}`."""
        first = self.placements[0] if self.placements else None
        info = {"node_id": first.node_id, "gpus": list(first.gpus)} if first is not None else None
        return {"selection_score_data": {"score": self.score, "node_info": info}}


class _Index:
    """Feasible nodes sorted by the allocator key; implements the `AllocationIndex` context."""

    __slots__ = ("entries", "gpus", "keys", "req", "views")

    def __init__(self, views: list[dict[str, Any]], req: Requirement) -> None:
        self.views = views
        self.req = req
        self.keys: list[tuple[tuple[float, ...], int] | None] = [None] * len(views)
        self.gpus: list[tuple[int, ...]] = [()] * len(views)
        entries: list[tuple[tuple[float, ...], int]] = []
        for pos, view in enumerate(views):
            got = node_choice(view, req)
            if got is not None:
                entry = (got[0], pos)
                self.keys[pos] = entry
                self.gpus[pos] = got[1]
                entries.append(entry)
        entries.sort()
        self.entries = entries

    def best(self) -> tuple[str, tuple[int, ...]] | None:
        if not self.entries:
            return None
        pos = self.entries[0][1]
        return self.views[pos]["node_id"], self.gpus[pos]

    def rekey(self, pos: int) -> None:
        old = self.keys[pos]
        if old is not None:
            i = bisect.bisect_left(self.entries, old)
            del self.entries[i]
        got = node_choice(self.views[pos], self.req)
        if got is None:
            self.keys[pos] = None
            return
        entry = (got[0], pos)
        self.keys[pos] = entry
        self.gpus[pos] = got[1]
        bisect.insort(self.entries, entry)


def node_state(node: NodeView) -> dict[str, Any]:
    """The node's free resources after its assignments, in the shape allocator policies read."""
    used_cpu = sum(a.vcpus for a in node.assignments)
    used_mem = sum(a.memory_mb for a in node.assignments)
    reserved: dict[int, float] = {}
    holders: dict[int, int] = {}
    exclusive: set[int] = set()
    for a in node.assignments:
        for g in a.gpus:
            reserved[g] = reserved.get(g, 0.0) + a.gpu_memory_mb
            holders[g] = holders.get(g, 0) + 1
            if a.exclusive:
                exclusive.add(g)
    mem_free = node.memory_mb - used_mem
    if node.memory_free_mb is not None:
        mem_free = min(mem_free, node.memory_free_mb)
    return {
        "node_id": node.node_id,
        "cluster": node.cluster,
        "vcpus_free": node.vcpus - used_cpu,
        "memory_free_mb": mem_free,
        "instances": len(node.assignments),
        "gpus": [
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "memory_total_mb": g.memory_total_mb,
                "memory_free_mb": min(g.memory_free_mb, g.memory_total_mb - reserved.get(g.index, 0.0)),
                "util_pct": g.util_pct,
                "holders": holders.get(g.index, 0),
                "held_exclusive": g.index in exclusive,
            }
            for g in node.gpus
        ],
    }


@dataclass(frozen=True, slots=True)
class AllocatorRef:
    """The block's resourceAllocator slot as a loader needs it (best-fit when the block has none)."""

    uri: str
    parameters: Mapping[str, Any] | None
    settings: Mapping[str, Any] | None
    rule_id: str


def allocator_ref(block: ResolvedBlock) -> AllocatorRef:
    """Which allocator places `block`, with the configuration it names."""
    slot = block.policy("resourceAllocator")
    rule_id = f"{block.block_id or block.component_uri}/resourceAllocator"
    if slot is None:
        return AllocatorRef(BEST_FIT_URI, None, None, rule_id)
    return AllocatorRef(slot.uri, slot.parameters, slot.settings, rule_id)


def check_count(count: int) -> None:
    """Raises: ValueError when `count` is outside 0..MAX_COUNT (a caller bug)."""
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be 0..{MAX_COUNT}, got {count}")


def place(
    block: ResolvedBlock,
    nodes: Sequence[NodeView],
    count: int,
    policy_runner: PolicyRunner,
    dry_run: bool = False,
) -> PlacementResult:
    """Place `count` instances of `block` on `nodes` with the block's resourceAllocator policy.

    Dry run: never raises for lack of room; returns what fits, `score` = placed/count and a 0..1
    feasibility score per alive node. Otherwise all instances fit or none are returned.

    Raises:
        PlacementError: not all instances fit ("no node satisfies: ..." naming the conditions).
        PolicyError: the policy is unknown, misconfigured, failed, or answered outside its contract.
        ValueError: count out of range or duplicate node ids (caller bugs).
    """
    check_count(count)
    ref = allocator_ref(block)
    handle = policy_runner.load(ref.uri, parameters=ref.parameters, settings=ref.settings, rule_id=ref.rule_id)
    req = requirement_for(handle.rule, handle.parameters, handle.settings, handle.uri)
    run = PlacementRun(block, nodes, count, handle.uri, req, dry_run)
    for i in range(count):
        if not run.accept(handle.eval(run.input_for(i), run.index)):
            break
    return run.result()


class PlacementRun:
    """One placement call in progress: the node views, the allocator's input, what is placed so far.

    `place()` (built-ins, in process) and `place_published()` (a published allocator in the
    sandbox, awaited) both hand it the policy's answers one instance at a time, so every answer
    is checked the same way: an unknown node, GPUs not on the node or not free, a held-exclusive
    GPU, missing vCPUs or memory -> PolicyOutputError naming the policy.
    """

    __slots__ = ("alive", "candidates", "count", "dead", "dry_run", "index", "input_data", "payload",
                 "placements", "pos_of", "req", "unmet", "uri", "views")

    def __init__(self, block: ResolvedBlock, nodes: Sequence[NodeView], count: int, uri: str, req: Requirement,
                 dry_run: bool = False) -> None:
        """Raises: ValueError when two nodes share an id (a caller bug)."""
        self.uri, self.req, self.count, self.dry_run = uri, req, count, dry_run
        alive = [n for n in nodes if n.alive]
        self.dead = len(nodes) - len(alive)
        self.views = [node_state(n) for n in alive]
        self.pos_of: dict[str, int] = {}
        for npos, view in enumerate(self.views):
            if view["node_id"] in self.pos_of:
                raise ValueError(f"node id {view['node_id']!r} appears twice")
            self.pos_of[view["node_id"]] = npos
        self.candidates = tuple(_candidate(v, req, count) for v in self.views) if dry_run else ()
        self.index = _Index(self.views, req)
        self.payload: dict[str, Any] = {"block": block.to_record(), "nodes": self.views,
                                        "requirement": req.describe()}
        self.input_data: dict[str, Any] = {"action": "allocation", "payload": self.payload}
        self.placements: list[Placement] = []
        self.unmet = ""

    def input_for(self, instance_index: int) -> dict[str, Any]:
        """The allocator's input for one instance (the same dict each time, views updated in place)."""
        self.payload["instance_index"] = instance_index
        return self.input_data

    def accept(self, out: Mapping[str, Any]) -> bool:
        """Check and reserve one answer `{node_id, gpus}`; False when the policy found no node.

        Raises: PolicyOutputError naming the policy and what is wrong with its answer.
        """
        node_id = out.get("node_id")
        if node_id is None:
            placed = len(self.placements)
            self.unmet = _unmet(self.req, self.views, self.count - placed, self.dead)
            return False
        pos = self.pos_of.get(node_id) if isinstance(node_id, str) else None
        if pos is None:
            raise PolicyOutputError(self.uri, f"node_id {str(node_id)[:60]!r} is not an alive candidate node")
        gpus = _checked_gpus(self.uri, out.get("gpus", []), self.views[pos], self.req)
        _reserve(self.views[pos], gpus, self.req)
        self.index.rekey(pos)
        self.placements.append(Placement(node_id=node_id, gpus=gpus))
        return True

    def result(self, score: float | None = None) -> PlacementResult:
        """What was placed (`score`: the policy's own dry-run score, else placed/count).

        Raises: PlacementError when not all instances fit and this is not a dry run.
        """
        placed = len(self.placements)
        if self.unmet and not self.dry_run:
            prefix = f"only {placed} of {self.count} instances fit; " if placed else ""
            raise PlacementError(prefix + self.unmet)
        if score is None:
            score = placed / self.count if self.count else 1.0
        return PlacementResult(
            placements=tuple(self.placements),
            requested=self.count,
            policy_uri=self.uri,
            requirement=self.req,
            dry_run=self.dry_run,
            score=score,
            candidates=self.candidates,
            unmet=self.unmet,
        )


def requirement_for(
    rule: object, parameters: Mapping[str, Any], settings: Mapping[str, Any], uri: str
) -> Requirement:
    """What one instance reserves: the built-in's own requirement, else read from the AIOS keys."""
    req = getattr(rule, "requirement", None)
    if isinstance(req, Requirement):
        return req
    # A custom allocator: read the same AIOS keys to know what each placement reserves.
    try:
        return requirement_from(parameters, settings, cpu_only=uri == CPU_URI)
    except PolicyInputError:
        return Requirement()


def _checked_gpus(uri: str, raw: object, view: dict[str, Any], req: Requirement) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in raw):
        raise PolicyOutputError(uri, "gpus must be a list of GPU indices")
    gpus = tuple(raw)
    if len(gpus) != req.gpus or len(set(gpus)) != len(gpus):
        raise PolicyOutputError(uri, f"gpus must name {req.gpus} distinct GPUs, got {list(gpus)}")
    by_index = {g["index"]: g for g in view["gpus"]}
    for g in gpus:
        info = by_index.get(g)
        if info is None:
            raise PolicyOutputError(uri, f"GPU {g} does not exist on node {view['node_id']}")
        if info["memory_free_mb"] < max(req.min_gpu_free_mb, req.gpu_memory_mb) or (
            info["util_pct"] > req.max_gpu_util_pct
        ):
            raise PolicyOutputError(
                uri, f"GPU {g} on node {view['node_id']} does not meet: {req.describe()[0]}"
            )
        if info.get("held_exclusive") or (req.exclusive and info.get("holders")):
            raise PolicyOutputError(
                uri, f"GPU {g} on node {view['node_id']} is held by another instance"
                + (" exclusively" if info.get("held_exclusive") else " and the block wants its GPUs alone")
            )
    if view["vcpus_free"] < req.vcpus or view["memory_free_mb"] < req.memory_mb:
        raise PolicyOutputError(uri, f"node {view['node_id']} lacks the vCPUs or memory the block needs")
    return gpus


def _reserve(view: dict[str, Any], gpus: tuple[int, ...], req: Requirement) -> None:
    view["vcpus_free"] -= req.vcpus
    view["memory_free_mb"] -= req.memory_mb
    view["instances"] += 1
    if gpus:
        for g in view["gpus"]:
            if g["index"] in gpus:
                g["memory_free_mb"] -= req.gpu_memory_mb
                g["holders"] = g.get("holders", 0) + 1
                g["held_exclusive"] = g.get("held_exclusive", False) or req.exclusive


def _usable(g: Mapping[str, Any], req: Requirement) -> bool:
    """Whether one GPU can take one more instance of `req` (memory, utilization, holders)."""
    return (g["memory_free_mb"] >= max(req.min_gpu_free_mb, req.gpu_memory_mb)
            and g["util_pct"] <= req.max_gpu_util_pct
            and not g.get("held_exclusive", False)
            and not (req.exclusive and g.get("holders", 0)))


def capacity(view: Mapping[str, Any], req: Requirement, limit: int) -> int:
    """How many instances (at most `limit`) fit on one node's current free resources."""
    cap = limit
    if req.vcpus > 0:
        cap = min(cap, int(view["vcpus_free"] // req.vcpus))
    if req.memory_mb > 0:
        cap = min(cap, int(view["memory_free_mb"] // req.memory_mb))
    if view["vcpus_free"] < req.vcpus or view["memory_free_mb"] < req.memory_mb:
        return 0
    if req.gpus == 0 or cap <= 0:
        return max(cap, 0)
    floor_mb = max(req.min_gpu_free_mb, req.gpu_memory_mb)
    per_gpu: list[int] = []
    for g in view["gpus"]:
        if not _usable(g, req):
            continue
        if req.exclusive:
            per_gpu.append(1)
        elif req.gpu_memory_mb <= 0:
            per_gpu.append(cap)
        else:
            per_gpu.append(min(cap, int((g["memory_free_mb"] - floor_mb) // req.gpu_memory_mb) + 1))
    # Largest k with sum(min(c_i, k)) >= gpus * k: each instance needs `gpus` distinct GPUs.
    lo, hi = 0, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(c, mid) for c in per_gpu) >= req.gpus * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _candidate(view: Mapping[str, Any], req: Requirement, count: int) -> Candidate:
    want = max(count, 1)
    cap = capacity(view, req, want)
    reason = "" if cap else _why_not(view, req)
    return Candidate(node_id=view["node_id"], score=min(1.0, cap / want), capacity=cap, reason=reason)


def _why_not(view: Mapping[str, Any], req: Requirement) -> str:
    parts: list[str] = []
    if req.gpus:
        ok = sum(1 for g in view["gpus"] if _usable(g, req))
        if ok < req.gpus:
            held = sum(1 for g in view["gpus"] if g.get("held_exclusive") or (req.exclusive and g.get("holders")))
            parts.append(f"{ok} of {len(view['gpus'])} GPUs qualify (needs {req.gpus})"
                         + (f"; {held} held by other instances" if held else ""))
    if view["vcpus_free"] < req.vcpus:
        parts.append(f"{_fmt(view['vcpus_free'])} vCPUs free (needs {_fmt(req.vcpus)})")
    if view["memory_free_mb"] < req.memory_mb:
        parts.append(f"{_fmt(view['memory_free_mb'])} MB memory free (needs {_fmt(req.memory_mb)})")
    return ", ".join(parts) or "the allocator policy declined it"


def _unmet(req: Requirement, views: list[dict[str, Any]], missing: int, dead: int) -> str:
    conds = req.describe() or ["any alive node"]
    msg = f"no node satisfies: {' and '.join(conds)}"
    if not views:
        return msg + f" (no alive nodes; {dead} not alive)"
    reasons = [f"{v['node_id']}: {_why_not(v, req)}" for v in views[:MAX_REASONS]]
    more = f"; ... {len(views) - MAX_REASONS} more" if len(views) > MAX_REASONS else ""
    dead_txt = f", {dead} not alive" if dead else ""
    return (
        f"{msg} ({missing} instance{'s' if missing != 1 else ''} left; checked {len(views)} alive nodes"
        f"{dead_txt}: {'; '.join(reasons)}{more})"
    )


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


__all__ = [
    "MAX_COUNT",
    "AllocatorRef",
    "Assignment",
    "Candidate",
    "GpuView",
    "NodeView",
    "Placement",
    "PlacementResult",
    "PlacementRun",
    "allocator_ref",
    "capacity",
    "check_count",
    "node_state",
    "place",
    "requirement_for",
]
