"""Placement with a published resourceAllocator (`aiosd policy push`): the async twin of `place()`.

The policy runs in a sandbox worker, so each answer is awaited; `PlacementRun` checks every answer
exactly as it checks a built-in's. Loading the policy (records, archives, the sandbox) is the
caller's business: it hands in a loaded handle. Built-ins never come here (`place()` stays sync).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiosd.controller.placement import (
    NodeView,
    PlacementResult,
    PlacementRun,
    allocator_ref,
    check_count,
    requirement_for,
)
from aiosd.policies.errors import PolicyOutputError
from aiosd.policies.runner import AsyncPolicyRunner
from aiosd.policies.sandbox import SandboxedPolicy
from aiosd.specs.resolve import ResolvedBlock


class AsyncAllocator(Protocol):
    """A loaded published policy (`aiosd.policies.sandbox.SandboxedPolicy` is one)."""

    uri: str

    @property
    def parameters(self) -> Mapping[str, Any]: ...

    @property
    def settings(self) -> Mapping[str, Any]: ...

    async def eval(self, input_data: Mapping[str, Any], context: Any = None,
                   parameters: Mapping[str, Any] | None = None, *,
                   timeout_s: float | None = None) -> dict[str, Any]: ...


async def load_published(block: ResolvedBlock, runner: AsyncPolicyRunner) -> SandboxedPolicy | None:
    """The block's resourceAllocator, loaded in the sandbox, when it is a published policy; None for a
    built-in (those run in `place()`, in process).

    Raises: PolicyError (not published, bad parameters/settings, archive fails verification, load failed).
    """
    ref = allocator_ref(block)
    if runner.catalog.builtins.find(ref.uri) is not None:
        return None
    handle = await runner.load(ref.uri, parameters=ref.parameters, settings=ref.settings, rule_id=ref.rule_id)
    # runner.load answers a SandboxedPolicy for every URI that is not a built-in (checked above).
    return handle if isinstance(handle, SandboxedPolicy) else None


async def place_published(block: ResolvedBlock, nodes: Sequence[NodeView], count: int, allocator: AsyncAllocator,
                          dry_run: bool = False) -> PlacementResult:
    """Place `count` instances of `block` on `nodes`, asking `allocator` once per instance.

    The input is AIOS's `{action: "allocation", payload: {block, nodes, requirement, instance_index}}`
    (node views as `placement.node_state` builds them, updated after each placement); the answer
    must be `{node_id, gpus}` (`node_id: null` = no node fits). A dry run asks once with
    `action: "dry_run"` and reads `{selection_score_data: {score, node_info}}`.

    Raises:
        PlacementError: the policy found no node for some instance (nothing is placed).
        PolicyError: the policy failed, timed out, crashed, or answered outside its contract
            (PolicyOutputError names the policy and the bad part of the answer).
        ValueError: count out of range or duplicate node ids (caller bugs).
    """
    check_count(count)
    req = requirement_for(None, allocator.parameters, allocator.settings, allocator.uri)
    run = PlacementRun(block, nodes, count, allocator.uri, req, dry_run)
    if dry_run:
        return await _dry_run(run, allocator)
    for i in range(count):
        # The sandbox serialises the input per call, so the views PlacementRun updates in place are safe to reuse.
        if not run.accept(await allocator.eval(run.input_for(i))):
            break
    return run.result()


async def _dry_run(run: PlacementRun, allocator: AsyncAllocator) -> PlacementResult:
    if run.count == 0:
        return run.result()
    out = await allocator.eval({**run.input_for(0), "action": "dry_run"})
    score, node_info = read_dry_run(allocator.uri, out)
    run.accept(node_info if node_info is not None else {"node_id": None})
    return run.result(score)


def read_dry_run(uri: str, out: Mapping[str, Any]) -> tuple[float, Mapping[str, Any] | None]:
    """`(score, node_info)` from a dry-run answer `{selection_score_data: {score, node_info}}`.

    Raises: PolicyOutputError naming the field that breaks the contract.
    """
    data = out.get("selection_score_data")
    if not isinstance(data, Mapping):
        raise PolicyOutputError(uri, "selection_score_data must be an object {score, node_info}")
    score = data.get("score")
    if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score) \
            or not 0.0 <= score <= 1.0:
        raise PolicyOutputError(uri, f"selection_score_data.score must be a number within 0..1, got "
                                f"{str(score)[:40]!r}")
    node_info = data.get("node_info")
    if node_info is not None and not isinstance(node_info, Mapping):
        raise PolicyOutputError(uri, "selection_score_data.node_info must be {node_id, gpus} or null")
    return float(score), node_info


__all__ = ["AsyncAllocator", "load_published", "place_published", "read_dry_run"]
