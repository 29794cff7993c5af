"""Autoscaling of blocks the cluster's controller places (issue 17, part 4).

- Every node reports the load of the cluster-block instances it runs: `nodes/<node>/load` =
  `{"blocks": {block: {instance: peak outstanding tasks since the last report}}}`, written when
  it changed (checked every REPORT_S; the `nodes` table is self-keyed, so only that node writes it).
- The cluster's leader runs each block's autoscaler policy (the block's own interval) on the
  instances the committed state places, with the queue lengths every node reported, and carries
  the decision out through the controller (a Raft commit, like `aiosd mgmt scale`).
- Before it scales, the leader commits the decision itself (`TaskState autoscale/<block>`:
  operation and wall time). Cooldowns are checked against that committed record, so a new leader
  after an election (or a kill -9 mid-scale) honours the old leader's cooldown: no scale storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiosd.blocks.loops import BlockLoop, _answer
from aiosd.controller.service import ControllerService
from aiosd.controller.state import TaskState, encode_command
from aiosd.errors import AiosdError
from aiosd.policies.errors import PolicyError
from aiosd.registry.service import RegistryService
from aiosd.specs import SpecError
from federation.errors import FederationError
from federation.replication import InvalidWrite, WriteRefused

if TYPE_CHECKING:
    from aiosd.blocks.service import BlockService

log = logging.getLogger(__name__)

REPORT_S = 1.0
SAMPLE_S = 0.2
TICK_S = 0.5
NODES = "nodes"
LOAD_SUFFIX = "/load"
TASK_PREFIX = "autoscale/"


def committed_decision(tasks: list[Any], bid: str) -> dict[str, Any] | None:
    """The last autoscale decision committed for `bid` (its TaskState detail), or None."""
    for t in reversed(tasks):
        if t.task_id == TASK_PREFIX + bid:
            with contextlib.suppress(ValueError):
                d = json.loads(t.detail)
                return d if isinstance(d, dict) else None
    return None


def cooling(decision: Mapping[str, Any] | None, op: str, params: Mapping[str, Any], now_wall: float) -> bool:
    """Is `op` still inside the cooldown the last committed decision started?"""
    if decision is None:
        return False
    key, default = ("scale_up_cooldown", 30.0) if op == "upscale" else ("scale_down_cooldown", 60.0)
    cd = params.get(key, default)
    cd = float(cd) if isinstance(cd, int | float) and not isinstance(cd, bool) else default
    at = decision.get("at")
    if not isinstance(at, int | float):
        return False
    return now_wall - float(at) < cd and (op == "downscale" or decision.get("op") == "upscale")


class ClusterScaler:
    """Load reports on every node; the autoscaler turns while this node leads (module doc)."""

    def __init__(self, blocks: BlockService, controller: ControllerService, registry: RegistryService) -> None:
        self._blocks, self._ctl, self._reg = blocks, controller, registry
        self._peaks: dict[str, dict[str, int]] = {}
        self._reported: dict[str, Any] | None = None
        self._loops: dict[str, tuple[str, BlockLoop]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.decisions = 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._report_loop(), name="cluster-load"),
                       asyncio.create_task(self._scale_loop(), name="cluster-autoscaler")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    # ----- every node: load reports ------------------------------------------------------
    def _sample(self) -> None:
        bal = self._blocks.runtime.balancer
        for iid, inst in self._ctl.local_desired.items():
            q = bal.outstanding(iid) if bal is not None else 0
            per = self._peaks.setdefault(inst.block_id, {})
            per[iid] = max(per.get(iid, 0), q)

    async def _report_loop(self) -> None:
        key = self._reg.node_id + LOAD_SUFFIX
        while True:
            for _ in range(int(REPORT_S / SAMPLE_S)):
                self._sample()
                await asyncio.sleep(SAMPLE_S)
            value = {"blocks": self._peaks}
            self._peaks = {}
            if value != self._reported:
                try:
                    await self._reg.put(NODES, key, value)
                    self._reported = value
                except (WriteRefused, InvalidWrite, FederationError) as e:
                    log.warning("load report not written", extra={"error": str(e)})

    async def _queues(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in await self._reg.scan(NODES):
            if e.key.endswith(LOAD_SUFFIX):
                for per in dict(e.value.get("blocks", {})).values():
                    for iid, q in dict(per).items():
                        out[iid] = max(out.get(iid, 0.0), float(q))
        return out

    # ----- the leader: autoscaler turns --------------------------------------------------
    async def _scale_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            role = self._ctl.role
            if role is None:
                self._loops.clear()  # a later term starts from the committed decisions
                continue
            view = self._ctl.view()
            queues = await self._queues() if view.specs else {}
            for bid in list(view.specs):
                try:
                    await self._turn(bid, view, queues, role.term)
                except (AiosdError, PolicyError, SpecError, FederationError, KeyError) as e:
                    log.warning("cluster autoscaler turn failed", extra={"block": bid, "error": str(e)})

    async def _loop_of(self, bid: str) -> BlockLoop | None:
        res = await self._blocks.lookup(bid)
        if res is None or res.policy("autoscaler") is None:
            return None
        slot = res.policy("autoscaler")
        key = json.dumps([slot.uri, slot.parameters, slot.settings] if slot else [], sort_keys=True, default=str)
        cached = self._loops.get(bid)
        if cached is None or cached[0] != key:
            st = self._blocks._new_loop(res)
            cached = self._loops[bid] = (key, st)
        st = cached[1]
        if st.pending:
            await self._blocks._load_pending(bid, st)
        return st

    async def _turn(self, bid: str, view: Any, queues: Mapping[str, float], term: int) -> None:
        st = await self._loop_of(bid)
        now = time.monotonic()
        if st is None or st.autoscaler is None or now < st.next_autoscale:
            return
        st.next_autoscale = now + st.autoscale_every_s
        res = await self._blocks.lookup(bid)
        slot = res.policy("autoscaler") if res is not None else None
        if res is None or slot is None:
            return
        insts = sorted(view.blocks.get(bid, {}))
        load = [{"instance_id": i, "queue_length": queues.get(i, 0.0), "utilization": 0.0} for i in insts]
        out = await _answer(st.autoscaler.eval({"block_data": {"minInstances": res.min_instances,
                                                               "maxInstances": res.max_instances, "instances": load},
                                                "now": now}))
        st.last_decision = str(out.get("reason", ""))
        op = out.get("operation")
        if out.get("skip", True) or op not in ("upscale", "downscale"):
            return
        cur = len(insts)
        victims = [str(v) for v in out.get("instances_list", [])]
        want = min(res.max_instances, cur + int(out.get("instances_count", 1))) if op == "upscale" \
            else max(res.min_instances, cur - len(victims))
        params = {**slot.settings, **slot.parameters}
        if want == cur or cooling(committed_decision(view.tasks, bid), str(op), params, time.time()):
            return
        # The decision is committed first: a leader killed right after it leaves its cooldown behind.
        detail = json.dumps({"op": op, "at": time.time(), "from": cur, "to": want, "reason": st.last_decision[:200]})
        await self._ctl.propose(encode_command(TaskState(term=term, task_id=TASK_PREFIX + bid, task_kind="autoscale",
                                                         state="running", detail=detail)))
        await self._blocks.scale(bid, want, victims, why="cluster autoscaler: " + st.last_decision)
        self.decisions += 1
        log.info("cluster block autoscaled", extra={"block": bid, "from": cur, "to": want, "op": op})


__all__ = ["ClusterScaler", "committed_decision", "cooling"]
