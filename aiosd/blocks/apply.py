"""From a resolved block to what the runtime runs: code location, node view, instance specs.

Pure functions (plus psutil reads in `local_node_view`, called off the loop). The flow that
stores records, runs the task and talks to the supervisor is `aiosd.blocks.service`'.

Code convention (docs/blocks.md): the podman driver runs `containerRegistryInfo.containerImage`;
the process driver runs a block directory holding `block.py`, named by `blockDir` in the block's
`blockInitData`, else in `blockMetadata`/`componentMetadata`, else `examples/NAME` for an image
`localhost/aiosd-NAME:TAG`. A relative `blockDir` is relative to the aiosd source root.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from aiosd.controller.placement import Assignment, GpuView, NodeView, Placement
from aiosd.controller.state import Allocator
from aiosd.specs.errors import SpecError
from aiosd.specs.resolve import ResolvedBlock
from runtime import GpuInfo, GpuMetrics, GpuMode, GpuRequest, HealthSettings, InstanceSpec
from runtime.errors import SpecError as RuntimeSpecError

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding aiosd/, sdk/, examples/
LOCAL_IMAGE_RE = re.compile(r"^localhost/aiosd-([a-z0-9][a-z0-9_.-]*)(?::[\w.-]+)?$")
BLOCK_DIR_KEY = "blockDir"
# Why 1 when minInstances is 0: a block with no instance cannot answer; scale to zero via mgmt.
INITIAL_FLOOR = 1
CLUSTER = "cluster"  # the block record's "placement" when the cluster controller places it


@dataclass(frozen=True, slots=True)
class CodeRef:
    """Where an instance's code comes from: an image (podman) and/or a block directory."""

    image: str | None
    block_dir: Path | None
    source: str  # which convention found it, for describe/progress


def block_dir_of(block: ResolvedBlock) -> tuple[Path | None, str]:
    """The block directory the specs name (blockInitData, then metadata, then the image name)."""
    for where, doc in (("blockInitData", block.init_data), ("metadata", block.metadata)):
        raw = doc.get(BLOCK_DIR_KEY)
        if isinstance(raw, str) and raw:
            p = Path(raw)
            return (p if p.is_absolute() else SOURCE_ROOT / p), f"{where}.{BLOCK_DIR_KEY}"
    m = LOCAL_IMAGE_RE.match(block.image)
    if m is not None and (SOURCE_ROOT / "examples" / m.group(1) / "block.py").is_file():
        return SOURCE_ROOT / "examples" / m.group(1), "examples/" + m.group(1)
    return None, ""


def code_for(block: ResolvedBlock, driver: str) -> CodeRef:
    """Where this driver finds the block's code.

    Raises:
        SpecError: the process driver has no block directory to run (naming the fields it read).
    """
    bdir, source = block_dir_of(block)
    if driver == "process":
        if bdir is None or not (bdir / "block.py").is_file():
            where = f" ({bdir}/block.py does not exist)" if bdir is not None else ""
            raise SpecError.at(
                "body.spec.values.blockInitData.blockDir",
                f"image {block.image!r} cannot run under the process driver, which runs a block directory"
                f"{where}; name one with blockInitData.blockDir or componentMetadata.blockDir, use an image "
                "localhost/aiosd-NAME with examples/NAME, or run the podman driver (see docs/blocks.md)")
        return CodeRef(image=None, block_dir=bdir, source=source)
    return CodeRef(image=block.image, block_dir=None, source="containerRegistryInfo.containerImage")


def local_node_view(node_id: str, gpus: Sequence[GpuInfo], metrics: Sequence[GpuMetrics],
                    assignments: Sequence[Assignment]) -> NodeView:
    """This machine as the placement code sees it (psutil: blocking, call off the loop)."""
    mem = psutil.virtual_memory()
    by_index = {m.index: m for m in metrics}
    views = []
    for g in gpus:
        m = by_index.get(g.index)
        views.append(GpuView(index=g.index, memory_total_mb=float(g.memory_total_mb),
                             memory_free_mb=float(m.memory_free_mb if m else g.memory_total_mb),
                             util_pct=float(m.utilization_pct if m else 0), uuid=g.uuid, name=g.name))
    return NodeView(node_id=node_id, vcpus=float(psutil.cpu_count() or 1), memory_mb=mem.total / 2**20,
                    gpus=tuple(views), assignments=tuple(assignments), memory_free_mb=mem.available / 2**20)


def instance_ids(block_id: str, keep: Sequence[str], count: int) -> list[str]:
    """`count` instance ids: the kept ones first (in order), then the lowest free `BLOCK-N`."""
    out = list(keep[:count])
    used = set(out)
    n = 0
    while len(out) < count:
        iid = f"{block_id}-{n}"
        if iid not in used:
            out.append(iid)
            used.add(iid)
        n += 1
    return out


def gpus_exclusive(block: ResolvedBlock) -> bool:
    """Whether the block's resourceAllocator asks for GPUs no other instance holds."""
    slot = block.policy("resourceAllocator")
    return slot is not None and slot.parameters.get("exclusive_gpus") is True


def health_settings(block: ResolvedBlock) -> HealthSettings:
    """The supervisor's health knobs from the block's stabilityChecker slot (defaults without one)."""
    slot = block.policy("stabilityChecker")
    if slot is None:
        return HealthSettings(interval_s=10.0)
    try:
        return HealthSettings.from_policy(slot.parameters, slot.settings)
    except RuntimeSpecError as e:
        raise SpecError.at(f"policies.stabilityChecker.{e.field.split('.', 1)[-1]}",
                           str(e).split(": ", 1)[-1]) from None


def instance_specs(block: ResolvedBlock, block_id: str, ids: Sequence[str], placements: Sequence[Placement],
                   code: CodeRef, block_record: Mapping[str, Any]) -> list[InstanceSpec]:
    """One InstanceSpec per id; GPUs pinned to the placement's indices, shared (the allocator
    accounted their memory) unless the allocator asks for `exclusive_gpus`."""
    health = health_settings(block)
    mode = GpuMode.EXCLUSIVE if gpus_exclusive(block) else GpuMode.SHARED
    ctx = {"block_data": dict(block_record), "block_init_data": dict(block.init_data),
           "block_init_settings": dict(block.settings), "block_init_parameters": dict(block.parameters)}
    specs = []
    for iid, pl in zip(ids, placements, strict=True):
        gpus = GpuRequest(ids=tuple(str(i) for i in pl.gpus), mode=mode) if pl.gpus else GpuRequest()
        specs.append(InstanceSpec(block_id=block_id, instance_id=iid, image=code.image, block_dir=code.block_dir,
                                  context=ctx, gpus=gpus, health=health))
    return specs


def allocator_of(res: ResolvedBlock) -> Allocator:
    """The block's resourceAllocator slot as the controller keeps it (default: best-fit)."""
    slot = res.policy("resourceAllocator")
    if slot is None:
        return Allocator()
    return Allocator(uri=slot.uri, parameters=dict(slot.parameters), settings=dict(slot.settings))


__all__ = [
    "BLOCK_DIR_KEY",
    "CLUSTER",
    "INITIAL_FLOOR",
    "SOURCE_ROOT",
    "CodeRef",
    "allocator_of",
    "block_dir_of",
    "code_for",
    "health_settings",
    "instance_ids",
    "instance_specs",
    "local_node_view",
]
