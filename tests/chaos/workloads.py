"""Workloads that run while faults are injected; every operation lands in the History.

- registry: PUT /v1/registry/tasks/<key> to a random node (the "tasks" table: any member writes);
  an acknowledged write is one that answered 2xx.
- controller: raw placements of small "phantom" blocks (POST /v1/controller/placements, forwarded
  to the leader and committed), deletes of earlier ones, and scaling of the real echo block.
- inference: POST /v1/infer/block/echo with a unique message to a random node.
- observer: GET /v1/controller on every node every 250 ms (term, role, leader, commit index).

Rates are small on purpose (2 shared cores, 5 daemons and their instances).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from tests.chaos.history import Api, History, Op, Outcome, Sample

TABLE = "tasks"
ECHO = "echo"
SPREAD = {"uri": "policy.resourceAllocator.cpu:v1", "parameters": {"cpus": 0.1},
          "settings": {"selection_mode": "spread"}}


@dataclass(frozen=True, slots=True)
class Rates:
    """Seconds between operations of each workload (one loop each)."""

    registry_s: float = 0.06
    controller_s: float = 0.8
    infer_s: float = 0.2
    observe_s: float = 0.25
    timeout_s: float = 12.0      # client deadline; longer than any daemon-side deadline (5 s transport)


class Workloads:
    """Runs the loops until `stop` is set; `nodes` are 1-based indexes."""

    def __init__(self, api: Api, hist: History, nodes: list[int], rng: random.Random, rates: Rates = Rates(),
                 echo_counts: tuple[int, int] = (2, 3)) -> None:
        self.api, self.hist, self.nodes, self.rng, self.rates = api, hist, nodes, rng, rates
        self.echo_counts = echo_counts
        self.stop = asyncio.Event()
        self.registry_paused = asyncio.Event()  # set: registry writers wait (recovery measurements)
        self.no_scale = asyncio.Event()  # set: the controller loop does not scale echo (a known bug, run.py)
        self._seq = 0
        self._placed: list[str] = []

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _op(self, kind: str, key: str, value: object) -> Op:
        op = Op(kind, self.rng.choice(self.nodes), key, value, time.monotonic())
        self.hist.ops.append(op)
        return op

    async def run(self) -> None:
        loops = [self._registry(), self._registry(), self._controller(), self._infer(), self._infer(),
                 self._observe()]
        async with asyncio.TaskGroup() as tg:
            for coro in loops:
                tg.create_task(coro)

    async def _pace(self, every_s: float) -> bool:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=every_s)
        except TimeoutError:
            return True
        return False

    async def _registry(self) -> None:
        while await self._pace(self.rates.registry_s):
            if self.registry_paused.is_set():
                continue
            seq = self._next()
            key = f"s{self.hist.seed}-w{seq:05d}"
            value = {"seq": seq, "seed": self.hist.seed}
            op = self._op("reg.put", key, value)
            await self.api.record(op, "PUT", f"/v1/registry/{TABLE}/{key}", value, self.rates.timeout_s)

    async def _controller(self) -> None:
        while await self._pace(self.rates.controller_s):
            roll = self.rng.random()
            if roll < 0.2 and not self.no_scale.is_set():
                count = self.rng.choice(self.echo_counts)
                op = self._op("ctl.scale", ECHO, count)
                body = {"block_id": ECHO, "count": count, "allocator": SPREAD}
                await self.api.record(op, "POST", "/v1/controller/placements", body, self.rates.timeout_s)
            elif roll < 0.4 and self._placed:
                block = self._placed.pop(self.rng.randrange(len(self._placed)))
                op = self._op("ctl.delete", block, None)
                await self.api.record(op, "DELETE", f"/v1/controller/placements/{block}", None, self.rates.timeout_s)
            else:
                block = f"ph-{self.hist.seed}-{self._next()}"
                op = self._op("ctl.place", block, 1)
                body = {"block_id": block, "count": 1, "allocator": SPREAD}
                r = await self.api.record(op, "POST", "/v1/controller/placements", body, self.rates.timeout_s)
                if r.outcome is not Outcome.DOWN and r.outcome is not Outcome.ERROR:
                    self._placed.append(block)

    async def _infer(self) -> None:
        while await self._pace(self.rates.infer_s):
            msg = f"m{self.hist.seed}-{self._next()}"
            op = self._op("infer", ECHO, msg)
            await self.api.record(op, "POST", f"/v1/infer/block/{ECHO}", {"data": {"message": msg}},
                                  self.rates.timeout_s)

    async def _observe(self) -> None:
        while await self._pace(self.rates.observe_s):
            replies = await asyncio.gather(*(self.api.call(i, "GET", "/v1/controller", timeout_s=1.0)
                                             for i in self.nodes))
            now = time.monotonic()
            for i, r in zip(self.nodes, replies, strict=True):
                if r.outcome is Outcome.OK and isinstance(r.body, dict):
                    self.hist.samples.append(sample_of(now, i, r.body))


def placements_of(body: object, block: str) -> dict[str, str]:
    """instance id -> node id of `block` in a placements answer (GET all, or POST one block)."""
    if not isinstance(body, dict):
        return {}
    if "blocks" in body:
        rows = body["blocks"].get(block, {}).get("instances", [])
    else:  # a POST /v1/controller/placements answer: {block_id, instances}
        rows = body.get("instances", []) if body.get("block_id") == block else []
    return {str(i["instance_id"]): str(i["node_id"]) for i in rows}


def sample_of(t: float, node: int, v: dict[str, object]) -> Sample:
    return Sample(t, node, str(v.get("node_id", "")), str(v.get("role", "")), int(str(v.get("term", 0))),
                  None if v.get("leader") is None else str(v.get("leader")), int(str(v.get("commit_index", 0))),
                  bool(v.get("quorum")))


__all__ = ["ECHO", "SPREAD", "TABLE", "Rates", "Workloads", "placements_of", "sample_of"]
