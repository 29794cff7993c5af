"""The cluster controller role: runs only on the Raft leader, started and stopped by the service's
role supervisor (STYLE §23). It serialises management writes (place, scale, remove) and runs the
level-triggered reconciliation: committed placements vs the nodes membership reports alive, so a
new leader picks up where the old one stopped. Decisions come from scheduler.py; this only
awaits inventories and proposals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Protocol, Self

from aiosd.controller.allocator import load_published, place_published
from aiosd.controller.errors import PlacementError
from aiosd.controller.placement import NodeView, PlacementResult, place
from aiosd.controller.scheduler import aplan_moves, aplan_scale, as_block, check_limits, node_views
from aiosd.controller.state import AnyCommand, ClusterState, RemoveBlock, TaskState, encode_command
from aiosd.controller.wire import ForwardAnswer, ForwardRequest, Inventory
from aiosd.policies.errors import PolicyError
from aiosd.policies.loading import PolicyRunner
from aiosd.policies.runner import AsyncPolicyRunner
from aiosd.specs.resolve import ResolvedBlock
from federation.consensus import NoQuorum, NotLeader, ProposeError

log = logging.getLogger(__name__)
# Level-triggered: even without a membership event, compare desired and live this often.
RECONCILE_INTERVAL_S = 0.5
# A proposal that has not committed by then answers "no quorum" (the write may still land later).
COMMIT_TIMEOUT_S = 5.0


class ControllerHost(Protocol):
    """What the role needs from the node's controller service."""

    state: ClusterState
    runner: PolicyRunner  # built-in allocators, in process

    @property
    def published(self) -> AsyncPolicyRunner | None:
        """Published allocators (the policies service's sandbox); None on a node without one."""

    @property
    def term(self) -> int: ...

    def has_quorum(self) -> bool: ...

    def departed(self, nodes: set[str]) -> set[str]: ...

    async def inventories(self) -> list[Inventory]: ...

    async def propose(self, command: bytes) -> int: ...


class ControllerRole:
    """`async with ControllerRole(host, term)`: the leader's control loop for one term."""

    def __init__(self, host: ControllerHost, term: int) -> None:
        self.host, self.term = host, term
        self._lock = asyncio.Lock()  # one plan-and-propose at a time: plans read committed state
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_failure = ""
        self.reconciles = 0

    async def __aenter__(self) -> Self:
        # Owned here and cancelled in __aexit__ (the role's whole life is this one loop).
        self._task = asyncio.create_task(self._reconcile_loop(), name="controller-reconcile")
        log.info("controller role started", extra={"term": self.term})
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("controller role stopped", extra={"term": self.term})

    def poke(self) -> None:
        """Reconcile now (a member changed)."""
        self._wake.set()

    # ----- management requests (from the local API or forwarded by other nodes) -------------
    async def handle(self, req: ForwardRequest) -> ForwardAnswer:
        """Carry out one management request; errors become an HTTP-like status in the answer."""
        try:
            if req.op == "dry_run" and req.dry_run is not None:
                return await self._dry_run(req)
            if not self.host.has_quorum():
                raise NoQuorum("the leader has not heard from a majority of voters")
            async with self._lock:
                if req.op == "place" and req.place is not None:
                    p = req.place
                    before = len(self.host.state.view().blocks.get(p.block_id, {}))
                    cmd = await aplan_scale(self.host.state.view(), await self.host.inventories(), p.block_id,
                                            p.count, p.allocator, self._place, self.term)
                    if p.spec is not None:
                        cmd = cmd.model_copy(update={"spec": p.spec})
                    check_limits(self.host.state.view(), cmd)
                    await self._commit(cmd)
                    insts = [{"instance_id": s.instance_id, "node_id": s.node_id, "gpus": list(s.gpus)}
                             for s in cmd.instances]
                    return ForwardAnswer(status=200, result={"block_id": p.block_id, "term": self.term,
                                                             "before": before, "instances": insts})
                if req.op == "remove" and req.block_id:
                    await self._commit(RemoveBlock(term=self.term, block_id=req.block_id))
                    return ForwardAnswer(status=200, result={"block_id": req.block_id, "removed": True})
            return ForwardAnswer(status=422, code="invalid", message=f"op {req.op}: missing its body")
        except PlacementError as e:
            return ForwardAnswer(status=409, code="no_fit", message=str(e))
        except PolicyError as e:
            return ForwardAnswer(status=422, code="policy", message=str(e))
        except (NoQuorum, NotLeader, TimeoutError) as e:
            return no_quorum(str(e) if not isinstance(e, TimeoutError) else "the write did not commit in time")
        except ProposeError as e:
            return ForwardAnswer(status=503, code="busy", message=str(e))

    async def _dry_run(self, req: ForwardRequest) -> ForwardAnswer:
        assert req.dry_run is not None  # checked by the caller's match
        d = req.dry_run
        result = await self._place(as_block(d.block_id, d.allocator),
                                   node_views(self.host.state.view(), await self.host.inventories()), d.count,
                                   dry_run=True)
        return ForwardAnswer(status=200, result={
            "block_id": d.block_id, "requested": d.count, "policy": result.policy_uri, "score": result.score,
            "requirement": result.requirement.describe(), "unmet": result.unmet,
            "placements": [{"node_id": p.node_id, "gpus": list(p.gpus)} for p in result.placements],
            "candidates": [{"node_id": c.node_id, "score": c.score, "capacity": c.capacity, "reason": c.reason}
                           for c in result.candidates],
        })

    async def _place(self, block: ResolvedBlock, views: list[NodeView], count: int,
                     dry_run: bool = False) -> PlacementResult:
        """Built-in allocators run in process; a published one in its sandbox worker, awaited (its
        record is a network record, its archive fetched from the nodes that hold it)."""
        runner = self.host.published
        published = await load_published(block, runner) if runner is not None else None
        if published is None:
            return place(block, views, count, self.host.runner, dry_run)
        return await place_published(block, views, count, published, dry_run)

    async def _commit(self, *cmds: AnyCommand) -> None:
        async with asyncio.timeout(COMMIT_TIMEOUT_S):
            for cmd in cmds:
                await self.host.propose(encode_command(cmd))

    # ----- reconciliation -------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONCILE_INTERVAL_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.reconcile()
            except (ProposeError, TimeoutError) as e:
                log.warning("reconcile could not commit", extra={"term": self.term, "error": str(e)})
            except Exception:  # one loop turn is the unit of work: log it, try again next turn
                log.exception("reconcile failed", extra={"term": self.term})

    async def reconcile(self) -> None:
        """Move instances off nodes membership reports dead or gone (same allocator)."""
        if not self.host.has_quorum():
            return
        async with self._lock:
            self.reconciles += 1
            view = self.host.state.view()
            placed = {i.node_id for insts in view.blocks.values() for i in insts.values()}
            gone = self.host.departed(placed)
            if not gone:
                return
            inventories = [inv for inv in await self.host.inventories() if inv.node_id not in gone]
            alive = placed - gone
            task_id = f"reassign-{uuid.uuid4().hex[:12]}"
            try:
                moves = await aplan_moves(view, inventories, alive, self._place, self.term)
            except (PlacementError, PolicyError) as e:
                if str(e) != self._last_failure:  # one failed task per distinct reason, not per turn
                    self._last_failure = str(e)
                    await self._commit(TaskState(term=self.term, task_id=task_id, task_kind="reassign",
                                                 state="failed", detail=str(e)[:2000]))
                return
            if not moves:
                return
            self._last_failure = ""
            detail = "; ".join(f"{m.block_id}: " + ", ".join(f"{s.instance_id}->{s.node_id}" for s in m.moves)
                               for m in moves)
            await self._commit(*moves, TaskState(term=self.term, task_id=task_id, task_kind="reassign",
                                                 state="done", detail=detail[:2000]))
            log.info("instances reassigned", extra={"term": self.term, "task": task_id,
                                                    "instances": sum(len(m.moves) for m in moves)})


def no_quorum(detail: str) -> ForwardAnswer:
    text = detail if detail.startswith("no quorum") else f"no quorum: {detail}"
    return ForwardAnswer(status=503, code="no_quorum", message=text)


__all__ = ["COMMIT_TIMEOUT_S", "RECONCILE_INTERVAL_S", "ControllerHost", "ControllerRole", "no_quorum"]
