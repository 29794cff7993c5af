"""Inference for a cluster block sent to a node that runs none of its instances: forwarded, signed,
to a node that does (p2p kind `blk.task`), which runs it through its own balancer and answers.

At most two hops, no routing tables: within a cluster the committed placements say which nodes
run the block and membership says which are alive; a block another cluster places goes to any
alive node of that cluster with `relay` set, and that node forwards it once more, inside its own
cluster, when it runs no instance itself. This is the seam the vDAG data plane (stage to stage, peer to peer)
builds on. Pure models and one small class; the API handler decides when to forward.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from federation.envelope import Verified
from federation.errors import AuthError, AuthReason, FederationError, RemoteRejected
from federation.membership import MemberState
from federation.sansio import NodeId
from federation.strict import Wire

log = logging.getLogger(__name__)
FORWARD_TIMEOUT_S = 60.0  # a task may take this long at the other node (its balancer's own limit is lower)
FORWARD_TRIES = 2  # hosts tried in turn when one is unreachable



class TaskForward(Wire):
    kind: Literal["blk.task"] = "blk.task"
    v: Literal[1] = 1
    block_id: str = Field(min_length=1, max_length=128)
    packet: bytes = Field(max_length=960 << 10)  # the AIOSPacket as msgpack; the envelope caps at 1 MiB
    session_id: str = Field("", max_length=256)
    relay: bool = False  # sent across clusters: the receiver may forward it once more, within its cluster


class TaskForwardAnswer(Wire):
    kind: Literal["blk.task_answer"] = "blk.task_answer"
    v: Literal[1] = 1
    status: int = Field(ge=100, le=599)
    code: str = Field("", max_length=64)
    message: str = Field("", max_length=4000)
    instance_id: str = Field("", max_length=128)
    node_id: str = Field("", max_length=128)
    packets: bytes = b""  # msgpack list of the instance's output packets


FORWARD_MODELS: tuple[type[BaseModel], ...] = (TaskForward, TaskForwardAnswer)
RunLocal = Callable[[TaskForward], Awaitable[TaskForwardAnswer]]


class TaskForwarder:
    """Sends `blk.task` to a node that runs the block, and answers those sent here with `run_local`."""

    def __init__(self, membership: Any, run_local: RunLocal) -> None:
        self.membership = membership
        self.run_local = run_local
        t = membership.transport
        for model in FORWARD_MODELS:
            t.verifier.schemas[str(model.model_fields["kind"].default)] = model
        t.route("blk.task", self._on_task)
        self.forwarded = 0
        self.served = 0

    async def _on_task(self, v: Verified) -> TaskForwardAnswer:
        if not isinstance(v.body, TaskForward):
            raise AuthError(AuthReason.BAD_BODY, "not a blk.task")
        self.served += 1
        return await self.run_local(v.body)

    def hosts(self, nodes: set[str]) -> list[tuple[str, str]]:
        """(node, address) of the alive nodes among `nodes`, in random order (spreads the load)."""
        swim = self.membership.swim
        alive = [(m.node, m.addr) for m in swim.members() if m.node in nodes and m.state is MemberState.ALIVE]
        random.shuffle(alive)
        return alive

    async def forward(self, nodes: set[str], req: TaskForward) -> TaskForwardAnswer:
        """Run `req` at one of `nodes` (those that run the block). Never raises: errors are answers."""
        hosts = self.hosts(nodes)
        if not hosts:
            return TaskForwardAnswer(status=503, code="unavailable",
                                     message=f"block {req.block_id} runs on {', '.join(sorted(nodes))}, "
                                             "none of them alive as far as this node knows")
        last = ""
        for node, addr in hosts[:FORWARD_TRIES]:
            try:
                ans = await self.membership.transport.request(addr, "blk.task", req, FORWARD_TIMEOUT_S,
                                                              to=NodeId(node))
            except RemoteRejected as e:
                return TaskForwardAnswer(status=502, code="forward_refused", message=f"node {node}: {e}")
            except FederationError as e:
                last = f"{node}: {e}"
                continue
            if isinstance(ans.body, TaskForwardAnswer):
                self.forwarded += 1
                return ans.body
            last = f"{node}: answered something else"
        return TaskForwardAnswer(status=503, code="unavailable",
                                 message=f"no node running block {req.block_id} answered ({last})")


__all__ = ["FORWARD_MODELS", "TaskForward", "TaskForwardAnswer", "TaskForwarder"]
