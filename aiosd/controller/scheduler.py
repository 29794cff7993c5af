"""What the controller decides, as pure functions: scale a block, reassign a dead node's instances.

Each call takes the committed state (ClusterView), the cluster's live node inventories and a
PolicyRunner, runs the block's allocator through `place()`, and returns the command to propose.
No IO, no Raft: the controller role proposes what comes out.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet

from aiosd.controller.errors import PlacementError
from aiosd.controller.placement import Assignment, GpuView, NodeView, Placement, PlacementResult, place
from aiosd.controller.state import (
    MAX_BLOCKS,
    Allocator,
    ClusterView,
    Instance,
    InstanceSpec,
    MoveInstances,
    PlaceBlock,
)
from aiosd.controller.wire import Inventory
from aiosd.policies.builtin.allocation import CPU_URI, requirement_from
from aiosd.policies.errors import PolicyInputError
from aiosd.policies.loading import PolicyRunner
from aiosd.specs.protocol import EMPTY_PROTOCOL
from aiosd.specs.resolve import PolicySlot, ResolvedBlock

# A LAN node runs at most this many instances of all cluster blocks together (each one a process
# or a container); the whole cluster at most MAX_CLUSTER_INSTANCES (one Raft snapshot holds them).
MAX_INSTANCES_PER_NODE = 1_000
MAX_CLUSTER_INSTANCES = 10_000
# The block id under which GPUs held by instances outside the cluster's state are reserved.
LOCAL_BLOCK = "(applied on the node)"


def as_block(block_id: str, allocator: Allocator) -> ResolvedBlock:
    """The minimal resolved block `place()` needs: its id and resourceAllocator slot."""
    slot = PolicySlot("resourceAllocator", allocator.uri, allocator.uri, dict(allocator.parameters),
                      dict(allocator.settings), "block")
    return ResolvedBlock(
        block_id=block_id, component_uri="controller.placement:0", image="", component_mode="aios",
        min_instances=0, max_instances=10_000, init_data={}, settings={}, parameters={},
        policies={"resourceAllocator": slot}, input_protocol=EMPTY_PROTOCOL, output_protocol=EMPTY_PROTOCOL,
        metadata={}, tags=(),
    )


def _assignment(inst: Instance, allocator: Allocator | None) -> Assignment:
    if allocator is None:
        return Assignment(inst.block_id, inst.instance_id, inst.gpus)
    try:
        req = requirement_from(allocator.parameters, allocator.settings, cpu_only=allocator.uri == CPU_URI)
    except PolicyInputError:
        return Assignment(inst.block_id, inst.instance_id, inst.gpus)
    return Assignment(inst.block_id, inst.instance_id, inst.gpus, req.vcpus, req.memory_mb, req.gpu_memory_mb,
                      req.exclusive)


def node_views(state: ClusterView, inventories: Sequence[Inventory], skip_block: str | None = None) -> list[NodeView]:
    """Live nodes with their committed reservations (instances of `skip_block` are left out), plus
    the GPUs that instances outside the cluster's state (blocks applied on one node) hold there."""
    by_node: dict[str, list[Assignment]] = {}
    for block_id, insts in state.blocks.items():
        if block_id == skip_block:
            continue
        for inst in insts.values():
            by_node.setdefault(inst.node_id, []).append(_assignment(inst, state.allocators.get(block_id)))
    for inv in inventories:
        for h in inv.held:
            by_node.setdefault(inv.node_id, []).append(
                Assignment(LOCAL_BLOCK, h.instance_id, h.gpus, exclusive=h.exclusive))
    return [
        NodeView(
            node_id=inv.node_id, cluster=inv.cluster, vcpus=inv.vcpus, memory_mb=inv.memory_mb,
            gpus=tuple(GpuView(g.index, g.memory_total_mb, g.memory_free_mb, g.util_pct, g.uuid, g.name)
                       for g in inv.gpus),
            assignments=tuple(by_node.get(inv.node_id, ())),
        )
        for inv in sorted(inventories, key=lambda i: i.node_id)
    ]


def plan_scale(state: ClusterView, inventories: Sequence[Inventory], block_id: str, count: int,
               allocator: Allocator, runner: PolicyRunner, term: int) -> PlaceBlock:
    """Keep up to `count` existing instances on live nodes and place the rest.

    Raises:
        PlacementError: the rest does not fit ("no node satisfies: ...").
        PolicyError: the allocator is unknown or misbehaves.
    """
    keep, views = _scale_inputs(state, inventories, block_id, count, allocator)
    result = place(as_block(block_id, allocator), views, count - len(keep), runner)
    return _scale_command(block_id, allocator, keep, result.placements, term)


# Places `count` instances of a block on node views: `place()` for built-ins, the sandboxed
# `place_published()` for a published allocator (aiosd/controller/allocator.py).
Placer = Callable[[ResolvedBlock, list[NodeView], int], Awaitable[PlacementResult]]


async def aplan_scale(state: ClusterView, inventories: Sequence[Inventory], block_id: str, count: int,
                      allocator: Allocator, placer: Placer, term: int) -> PlaceBlock:
    """plan_scale with an awaited placer (the leader's path; a published allocator answers from
    its sandbox worker). Raises as plan_scale."""
    keep, views = _scale_inputs(state, inventories, block_id, count, allocator)
    result = await placer(as_block(block_id, allocator), views, count - len(keep))
    return _scale_command(block_id, allocator, keep, result.placements, term)


def _scale_inputs(state: ClusterView, inventories: Sequence[Inventory], block_id: str, count: int,
                  allocator: Allocator) -> tuple[list[Instance], list[NodeView]]:
    """The instances kept (on live nodes, same allocator, lowest ordinals) and the node views
    with their reservations."""
    live = {inv.node_id for inv in inventories}
    existing = state.blocks.get(block_id, {}) if state.allocators.get(block_id) == allocator else {}
    keep = sorted((i for i in existing.values() if i.node_id in live), key=lambda i: _ordinal(i.instance_id))
    keep = keep[:count]
    views = node_views(state, inventories, skip_block=block_id)
    return keep, _with_kept(views, keep, allocator)


def _scale_command(block_id: str, allocator: Allocator, keep: Sequence[Instance], placements: Sequence[Placement],
                   term: int) -> PlaceBlock:
    used = {_ordinal(i.instance_id) for i in keep}
    specs = [InstanceSpec(instance_id=i.instance_id, node_id=i.node_id, gpus=i.gpus) for i in keep]
    n = 0
    for p in placements:
        while n in used:
            n += 1
        used.add(n)
        specs.append(InstanceSpec(instance_id=f"{block_id}-{n}", node_id=p.node_id, gpus=p.gpus))
    return PlaceBlock(term=term, block_id=block_id, allocator=allocator, instances=tuple(specs))


def check_limits(state: ClusterView, cmd: PlaceBlock) -> None:
    """Raises: PlacementError when `cmd` would put more than MAX_INSTANCES_PER_NODE instances on a
    node, or more than MAX_CLUSTER_INSTANCES in the cluster (other blocks' instances count too)."""
    if cmd.block_id not in state.blocks and len(state.blocks) >= MAX_BLOCKS:
        raise PlacementError(f"the cluster already places {len(state.blocks)} blocks, the most it holds; "
                             f"remove one first")
    per_node = Counter(i.node_id for b, insts in state.blocks.items() if b != cmd.block_id for i in insts.values())
    per_node.update(s.node_id for s in cmd.instances)
    total = sum(per_node.values())
    if total > MAX_CLUSTER_INSTANCES:
        raise PlacementError(f"the cluster would hold {total} instances; it holds at most {MAX_CLUSTER_INSTANCES} "
                             f"(all blocks together)")
    node, n = per_node.most_common(1)[0] if per_node else ("", 0)
    if n > MAX_INSTANCES_PER_NODE:
        raise PlacementError(f"node {node} would hold {n} instances; a node holds at most {MAX_INSTANCES_PER_NODE} "
                             f"(all blocks together): ask for fewer or add nodes")


def plan_moves(state: ClusterView, inventories: Sequence[Inventory], alive: AbstractSet[str], runner: PolicyRunner,
               term: int) -> list[MoveInstances]:
    """For each block, move instances whose node is not `alive` onto the `inventories` nodes (same allocator).

    Raises:
        PlacementError: some block's orphans do not fit (the caller records it as a failed task).
    """
    out: list[MoveInstances] = []
    for block_id, orphans in _orphaned(state, alive):
        block = as_block(block_id, state.allocators.get(block_id, Allocator()))
        result: PlacementResult = place(block, node_views(state, inventories), len(orphans), runner)
        out.append(_moves(block_id, orphans, result, term))
        state = _applied(state, block_id, out[-1].moves, term)
    return out


async def aplan_moves(state: ClusterView, inventories: Sequence[Inventory], alive: AbstractSet[str],
                      placer: Placer, term: int) -> list[MoveInstances]:
    """plan_moves with an awaited placer (the leader's path). Raises as plan_moves."""
    out: list[MoveInstances] = []
    for block_id, orphans in _orphaned(state, alive):
        block = as_block(block_id, state.allocators.get(block_id, Allocator()))
        result = await placer(block, node_views(state, inventories), len(orphans))
        out.append(_moves(block_id, orphans, result, term))
        state = _applied(state, block_id, out[-1].moves, term)
    return out


def _orphaned(state: ClusterView, alive: AbstractSet[str]) -> list[tuple[str, list[Instance]]]:
    """Per block (in id order), its instances on nodes not in `alive`."""
    out = []
    for block_id in sorted(state.blocks):
        orphans = sorted((i for i in state.blocks[block_id].values() if i.node_id not in alive),
                         key=lambda i: i.instance_id)
        if orphans:
            out.append((block_id, orphans))
    return out


def _moves(block_id: str, orphans: Sequence[Instance], result: PlacementResult, term: int) -> MoveInstances:
    moves = tuple(InstanceSpec(instance_id=o.instance_id, node_id=p.node_id, gpus=p.gpus)
                  for o, p in zip(orphans, result.placements, strict=True))
    return MoveInstances(term=term, block_id=block_id, moves=moves)


def _applied(state: ClusterView, block_id: str, moves: Sequence[InstanceSpec], term: int) -> ClusterView:
    blocks = dict(state.blocks)
    insts = dict(blocks[block_id])
    for m in moves:
        insts[m.instance_id] = Instance(m.instance_id, block_id, m.node_id, m.gpus, term)
    blocks[block_id] = insts
    return dataclasses.replace(state, blocks=blocks)


def _with_kept(views: list[NodeView], keep: Sequence[Instance], allocator: Allocator) -> list[NodeView]:
    extra: dict[str, list[Assignment]] = {}
    for i in keep:
        extra.setdefault(i.node_id, []).append(_assignment(i, allocator))
    return [NodeView(v.node_id, v.cluster, v.alive, v.vcpus, v.memory_mb, v.gpus,
                     v.assignments + tuple(extra.get(v.node_id, ())), v.memory_free_mb) for v in views]


def _ordinal(instance_id: str) -> int:
    tail = instance_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


__all__ = ["MAX_CLUSTER_INSTANCES", "MAX_INSTANCES_PER_NODE", "Placer", "aplan_moves", "aplan_scale", "as_block", "check_limits", "node_views", "plan_moves", "plan_scale"]
