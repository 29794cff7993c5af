"""Serving tasks on this node: the hosts of a cluster block, tasks other nodes forward here, the
instance a published loadBalancer policy picks, and the governance pre-check of an action.

`BlockServing` is a mixin of `BlockService` (service.py), like the cluster path (cluster.py) and the
loops (loops.py); the attributes it reads are declared below and set by the service.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from aiosd.blocks.forward import TaskForward, TaskForwardAnswer, TaskForwarder
from aiosd.controller.service import ControllerService
from aiosd.instances.service import RuntimeService
from aiosd.policies import PolicyRegistry
from aiosd.policies.errors import PolicyOutputError, PolicyVetoed
from aiosd.policies.service import PoliciesService
from aiosd.specs import ResolvedBlock
from runtime.errors import InstanceBusy, NoHealthyInstance, TaskError, TaskFailed


class BlockServing:
    """See the module docstring."""

    runtime: RuntimeService
    controller: ControllerService | None
    node_id: str
    forwarder: TaskForwarder | None
    policy_svc: PoliciesService | None
    policies: PolicyRegistry
    _resolved: dict[str, ResolvedBlock]
    _lb: dict[str, tuple[str, Any]]

    def hosts_of(self, block_id: str) -> set[str]:
        """Other nodes the committed placements run `block_id` on (empty: not a cluster block)."""
        if self.controller is None:
            return set()
        insts = self.controller.view().blocks.get(block_id, {})
        return {i.node_id for i in insts.values()} - {self.node_id}

    async def _run_forwarded(self, req: TaskForward) -> TaskForwardAnswer:
        """A task another node forwarded: run it here like a local inference (errors are answers);
        one sent across clusters goes on to a node of this cluster that runs the block."""
        res = self._resolved.get(req.block_id)
        if req.relay and self.forwarder is not None and (res is None or not self.runtime.sup.healthy(req.block_id)):
            hosts = self.hosts_of(req.block_id)
            if hosts:
                return await self.forwarder.forward(hosts, req.model_copy(update={"relay": False}))
        bal = self.runtime.balancer
        if res is None or bal is None:
            return TaskForwardAnswer(status=404, code="not_here", node_id=self.node_id,
                                     message=f"block {req.block_id} runs no instance on node {self.node_id}")
        lb = res.policy("loadBalancer")
        sticky = lb is not None and ("sticky" in lb.uri or "session" in lb.uri)
        try:
            reply = await bal.submit(req.block_id, req.packet, req.session_id or None, sticky=sticky)
        except TaskFailed as e:
            return TaskForwardAnswer(status=422, code="task_failed", message=str(e)[:4000], node_id=self.node_id)
        except (NoHealthyInstance, InstanceBusy) as e:
            return TaskForwardAnswer(status=503, code="unavailable", message=str(e)[:4000], node_id=self.node_id)
        except TaskError as e:
            return TaskForwardAnswer(status=502, code="instance_error", message=str(e)[:4000], node_id=self.node_id)
        return TaskForwardAnswer(status=200, instance_id=reply.instance_id, node_id=self.node_id,
                                 packets=msgpack.packb(reply.packets, use_bin_type=True))

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


__all__ = ["BlockServing"]
