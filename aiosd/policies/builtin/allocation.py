"""Resource allocators: best-fit GPU (by free memory, then utilization) and CPU-only.

AIOS contract: input `{action: dry_run|allocation|scale|reassignment, payload{nodes, ...}}` ->
`{node_id, gpus}` (dry_run: `{selection_score_data{score, node_info{node_id, gpus}}}`).
`payload.nodes` is a list of `{node_id, vcpus_free, memory_free_mb, instances, gpus: [{index,
memory_free_mb, util_pct, holders, held_exclusive}]}`. GPUs are shared by memory (each instance
reserves `gpu_memory_mb`) unless `exclusive_gpus` is true: then a GPU with any holder is not chosen,
and a GPU that some instance holds exclusively is never chosen for anyone. When the caller passes an `AllocationIndex` as `context` (the
scheduler does), the choice comes from its incremental index instead of a scan; both give the
same answer (tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from aiosd.policies.contract import AIOSv1PolicyRule
from aiosd.policies.errors import PolicyInputError

BEST_FIT_URI = "policy.resourceAllocator.best-fit:v1"
CPU_URI = "policy.resourceAllocator.cpu:v1"

SelectionMode = Literal["best-fit", "spread", "first-fit"]
# AIOS example spellings of `selection_mode` and what they mean here.
MODE_ALIASES: Mapping[str, SelectionMode] = {
    "best-fit": "best-fit",
    "bestfit": "best-fit",
    "pack": "best-fit",
    "spread": "spread",
    "balanced": "spread",
    "lightest-load": "spread",
    "least-loaded": "spread",
    "first-fit": "first-fit",
    "greedy": "first-fit",
}


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one instance needs. Units: MB and vCPUs; utilization in percent (0..100)."""

    gpus: int = 0
    min_gpu_free_mb: float = 0.0  # a GPU qualifies only with at least this much free
    gpu_memory_mb: float = 0.0  # what one instance takes on each of its GPUs
    max_gpu_util_pct: float = 100.0
    vcpus: float = 0.0
    memory_mb: float = 0.0
    mode: SelectionMode = "best-fit"
    exclusive: bool = False  # the instance's GPUs are its alone (no other holder before or after)

    def describe(self) -> list[str]:
        """The conditions, as a user reads them ("2 GPUs with >= 10000 MB free ...")."""
        out: list[str] = []
        if self.gpus:
            gpu = (
                f"{self.gpus} GPU{'s' if self.gpus > 1 else ''} with >= {_fmt(self.min_gpu_free_mb)} MB free"
            )
            if self.max_gpu_util_pct < 100:
                gpu += f" and <= {_fmt(self.max_gpu_util_pct)}% utilization"
            if self.exclusive:
                gpu += ", not held by any other instance (exclusive)"
            out.append(gpu)
        if self.vcpus:
            out.append(f"{_fmt(self.vcpus)} vCPUs free")
        if self.memory_mb:
            out.append(f"{_fmt(self.memory_mb)} MB memory free")
        return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def requirement_from(
    parameters: Mapping[str, Any], settings: Mapping[str, Any], *, cpu_only: bool = False
) -> Requirement:
    """Read a requirement from AIOS-style allocator parameters (`gpus`, `min_gpu_free_memory`,
    `max_gpu_utilization` as 0..1 or percent, `gpu_memory_mb`, `cpus`/`vcpus`, `min_memory_mb`/
    `memory_mb`, `exclusive_gpus`) and `settings.selection_mode`.

    Raises:
        PolicyInputError: a value of the wrong type or range (path named).
    """

    def num(key: str, default: float, *, where: Mapping[str, Any] = parameters, lo: float = 0.0) -> float:
        v = where.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < lo or math.isnan(v):
            raise PolicyInputError(f"parameters.{key}", f"must be a number >= {_fmt(lo)}, got {v!r}"[:200])
        return float(v)

    gpus_f = 0.0 if cpu_only else num("gpus", 0)
    if not gpus_f.is_integer() or gpus_f > 64:
        raise PolicyInputError("parameters.gpus", f"must be an integer 0..64, got {gpus_f:g}")
    min_free = num("min_gpu_free_memory", 0)
    util = num("max_gpu_utilization", 100)
    util_pct = util * 100 if util <= 1 else util
    vcpus = num("cpus", 0) if "cpus" in parameters else num("vcpus", 0)
    mem = num("min_memory_mb", 0) if "min_memory_mb" in parameters else num("memory_mb", 0)
    exclusive = parameters.get("exclusive_gpus", False)
    if not isinstance(exclusive, bool):
        raise PolicyInputError("parameters.exclusive_gpus", f"must be true or false, got {exclusive!r}"[:200])
    raw_mode = settings.get("selection_mode", "best-fit")
    mode = MODE_ALIASES.get(raw_mode) if isinstance(raw_mode, str) else None
    if mode is None:
        raise PolicyInputError(
            "settings.selection_mode",
            f"must be one of {', '.join(sorted(MODE_ALIASES))}, got {raw_mode!r}"[:300],
        )
    return Requirement(
        gpus=int(gpus_f),
        min_gpu_free_mb=min_free,
        gpu_memory_mb=num("gpu_memory_mb", min_free),
        max_gpu_util_pct=min(util_pct, 100.0),
        vcpus=vcpus,
        memory_mb=mem,
        mode=mode,
        exclusive=exclusive,
    )


@runtime_checkable
class AllocationIndex(Protocol):
    """What the scheduler offers a built-in allocator as `context`: the best node for its requirement."""

    def best(self) -> tuple[str, tuple[int, ...]] | None: ...


Key = tuple[float, ...]


def node_choice(node: Mapping[str, Any], req: Requirement) -> tuple[Key, tuple[int, ...]] | None:
    """The sort key (smaller is better) and GPU indices for one node, or None if it cannot host.

    The scheduler's index uses the same function, so scan and index agree by construction.
    """
    if node.get("vcpus_free", 0.0) < req.vcpus or node.get("memory_free_mb", 0.0) < req.memory_mb:
        return None
    mode = req.mode
    if req.gpus == 0:
        if mode == "first-fit":
            return (), ()
        slack_mem = node.get("memory_free_mb", 0.0) - req.memory_mb
        slack_cpu = node.get("vcpus_free", 0.0) - req.vcpus
        inst = float(node.get("instances", 0))
        if mode == "best-fit":
            return (slack_mem, slack_cpu, inst), ()
        return (inst, -slack_mem, -slack_cpu), ()
    eligible = [
        (g["memory_free_mb"], g.get("util_pct", 0.0), g["index"])
        for g in node.get("gpus", ())
        if g["memory_free_mb"] >= req.min_gpu_free_mb
        and g["memory_free_mb"] >= req.gpu_memory_mb
        and g.get("util_pct", 0.0) <= req.max_gpu_util_pct
        and not g.get("held_exclusive", False)
        and not (req.exclusive and g.get("holders", 0))
    ]
    if len(eligible) < req.gpus:
        return None
    if mode == "best-fit":
        eligible.sort()
        chosen = eligible[: req.gpus]
        return (sum(c[0] for c in chosen), sum(c[1] for c in chosen)), tuple(c[2] for c in chosen)
    if mode == "spread":
        eligible.sort(key=lambda c: (-c[0], c[1], c[2]))
        chosen = eligible[: req.gpus]
        return (-sum(c[0] for c in chosen), sum(c[1] for c in chosen)), tuple(c[2] for c in chosen)
    eligible.sort(key=lambda c: c[2])
    return (), tuple(c[2] for c in eligible[: req.gpus])


def read_node_views(raw: object) -> list[dict[str, Any]]:
    """Check `payload.nodes` as a caller outside the scheduler may send it.

    Raises:
        PolicyInputError: naming the path of the first wrong value.
    """
    base = "input_data.payload.nodes"
    if not isinstance(raw, list):
        raise PolicyInputError(base, "must be a list of node views")
    out: list[dict[str, Any]] = []
    for i, node in enumerate(raw):
        path = f"{base}[{i}]"
        if not isinstance(node, Mapping) or not isinstance(node.get("node_id"), str):
            raise PolicyInputError(path, "must be an object with a string node_id")
        view: dict[str, Any] = {"node_id": node["node_id"], "gpus": []}
        for key in ("vcpus_free", "memory_free_mb", "instances"):
            view[key] = _number(node.get(key, 0), f"{path}.{key}")
        gpus = node.get("gpus", [])
        if not isinstance(gpus, list):
            raise PolicyInputError(f"{path}.gpus", "must be a list")
        for j, g in enumerate(gpus):
            gpath = f"{path}.gpus[{j}]"
            if (
                not isinstance(g, Mapping)
                or not isinstance(g.get("index"), int)
                or isinstance(g.get("index"), bool)
            ):
                raise PolicyInputError(gpath, "must be an object with an integer index")
            view["gpus"].append(
                {
                    "index": g["index"],
                    "memory_free_mb": _number(g.get("memory_free_mb", 0), f"{gpath}.memory_free_mb"),
                    "util_pct": _number(g.get("util_pct", 0), f"{gpath}.util_pct"),
                    "holders": int(_number(g.get("holders", 0), f"{gpath}.holders")),
                    "held_exclusive": _flag(g.get("held_exclusive", False), f"{gpath}.held_exclusive"),
                }
            )
        out.append(view)
    return out


def _flag(v: object, path: str) -> bool:
    if not isinstance(v, bool):
        raise PolicyInputError(path, f"must be true or false, got {v!r}"[:200])
    return v


def _number(v: object, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        raise PolicyInputError(path, f"must be a number, got {type(v).__name__}")
    return float(v)


def choose_by_scan(
    nodes: Sequence[Mapping[str, Any]], req: Requirement
) -> tuple[str, tuple[int, ...]] | None:
    """The best node for `req` by scanning every node (ties: earlier node wins)."""
    best: tuple[Key, int, str, tuple[int, ...]] | None = None
    for pos, node in enumerate(nodes):
        got = node_choice(node, req)
        if got is None:
            continue
        key, gpus = got
        if best is None or (key, pos) < (best[0], best[1]):
            best = (key, pos, str(node["node_id"]), gpus)
    return None if best is None else (best[2], best[3])


class BestFitAllocator(AIOSv1PolicyRule):
    """Best-fit GPU placement: the tightest GPUs with enough free memory, then lowest utilization."""

    description: ClassVar[str] = "GPU best-fit by free memory and utilization (CPU-only when gpus is 0)"
    cpu_only: ClassVar[bool] = False
    parameters_protocol: ClassVar[Mapping[str, Any]] = {
        "gpus": {"type": "integer", "min": 0, "max": 64, "description": "GPUs per instance"},
        "min_gpu_free_memory": {"type": "number", "min": 0, "description": "MB free a GPU needs"},
        "gpu_memory_mb": {"type": "number", "min": 0, "description": "MB one instance takes per GPU"},
        "max_gpu_utilization": {"type": "number", "min": 0, "max": 100, "description": "0..1 or percent"},
        "cpus": {"type": "number", "min": 0},
        "vcpus": {"type": "number", "min": 0},
        "min_memory_mb": {"type": "number", "min": 0},
        "memory_mb": {"type": "number", "min": 0},
        "exclusive_gpus": {"type": "boolean", "description": "no other instance on the instance's GPUs"},
    }
    settings_protocol: ClassVar[Mapping[str, Any]] = {
        "selection_mode": {"type": "string", "choices": sorted(MODE_ALIASES)},
    }

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        super().__init__(rule_id, settings, parameters)
        self.requirement = requirement_from(parameters, settings, cpu_only=self.cpu_only)

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        req = (
            self.requirement
            if parameters == self.parameters
            else requirement_from(parameters, self.settings, cpu_only=self.cpu_only)
        )
        action = input_data.get("action", "allocation")
        if action not in ("allocation", "dry_run", "scale", "reassignment"):
            raise PolicyInputError(
                "input_data.action",
                f"must be allocation, dry_run, scale or reassignment, got {action!r}"[:200],
            )
        if isinstance(context, AllocationIndex):
            choice = context.best()
        else:
            payload = input_data.get("payload", {})
            nodes = payload.get("nodes") if isinstance(payload, Mapping) else None
            choice = choose_by_scan(read_node_views(nodes), req)
        if action == "dry_run":
            node_info = {"node_id": choice[0], "gpus": list(choice[1])} if choice else None
            return {"selection_score_data": {"score": 1.0 if choice else 0.0, "node_info": node_info}}
        if choice is None:
            return {"node_id": None, "gpus": [], "unmet": req.describe()}
        return {"node_id": choice[0], "gpus": list(choice[1])}


class CpuAllocator(BestFitAllocator):
    """CPU-only placement: best fit by free memory and vCPUs; never assigns GPUs."""

    description: ClassVar[str] = "CPU-only best-fit by free memory and vCPUs"
    cpu_only: ClassVar[bool] = True


__all__ = [
    "BEST_FIT_URI",
    "CPU_URI",
    "MODE_ALIASES",
    "AllocationIndex",
    "BestFitAllocator",
    "CpuAllocator",
    "Requirement",
    "SelectionMode",
    "choose_by_scan",
    "node_choice",
    "read_node_views",
    "requirement_from",
]
