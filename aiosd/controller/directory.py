"""The other clusters of the network, as this node's controller sees them.

`ClusterDirectory` answers what crosses cluster borders: which nodes membership knows in a cluster,
the AIOS-shaped cluster records a clusterAllocator filters, a block's cluster chosen by running its
clusterAllocator (a dry run in each candidate cluster), a request relayed to another cluster's nodes
(which hand it to their own leader) and one node's controller status. It reads membership, the
metrics and registry services and the policy runner; the gateway (`ControllerService.submit`) comes
in as a callable, so the directory never imports the service.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiosd.context import NodeContext
from aiosd.controller.errors import PlacementError
from aiosd.controller.records import CLUSTERS
from aiosd.controller.role import no_quorum
from aiosd.controller.wire import DryRunRequest, ForwardAnswer, ForwardRequest, StatusAnswer, StatusRequest
from aiosd.errors import AiosdError
from aiosd.membership.service import MembershipService
from aiosd.metrics.service import METRICS_KEY, cluster_aggregates, nest
from aiosd.policies import PolicyRunner
from aiosd.registry.service import REGISTRY_KEY
from federation.errors import FederationError
from federation.membership import MemberState
from federation.sansio import NodeId

log = logging.getLogger(__name__)
FORWARD_TIMEOUT_S = 8.0
FORWARD_TRIES = 3  # nodes of another cluster asked in turn before its gateway counts as unreachable
STATUS_TIMEOUT_S = 1.0

Submit = Callable[[ForwardRequest], Awaitable[ForwardAnswer]]


class ClusterDirectory:
    """See the module docstring. `cluster` is this node's own cluster."""

    def __init__(self, ctx: NodeContext, cluster: str, membership: MembershipService | None, runner: PolicyRunner,
                 submit: Submit) -> None:
        self.ctx = ctx
        self.cluster = cluster
        self.membership = membership
        self.runner = runner
        self.submit = submit

    @property
    def members(self) -> MembershipService:
        if self.membership is None:
            raise AiosdError("the membership service is not running on this node")
        return self.membership

    def members_of(self, cluster: str) -> list[Any]:
        if self.membership is None:
            return []
        return [m for m in self.members.swim.members() if m.meta.get("cluster") == cluster]

    def cluster_nodes(self, cluster: str) -> set[str]:
        """Node ids membership knows in `cluster` (alive or not: the forwarder filters)."""
        return {m.node for m in self.members_of(cluster)}

    async def submit_elsewhere(self, req: ForwardRequest) -> ForwardAnswer:
        """`req` to one of `req.cluster`'s alive nodes (up to FORWARD_TRIES of them, in random order)."""
        peers = [m for m in self.members_of(req.cluster) if m.state is MemberState.ALIVE]
        if not peers:
            return ForwardAnswer(status=404, code="no_cluster",
                                 message=f"no alive node of cluster {req.cluster!r} is known to this node")
        last = ""
        for m in random.sample(peers, min(len(peers), FORWARD_TRIES)):
            try:
                ans = await self.members.transport.request(m.addr, "ctl.forward", req, FORWARD_TIMEOUT_S, to=m.node)
            except FederationError as e:
                last = f"{m.node}: {e}"
                continue
            if isinstance(ans.body, ForwardAnswer):
                return ans.body
        return no_quorum(f"no node of cluster {req.cluster} answered ({last})")

    async def cluster_records(self) -> list[dict[str, Any]]:
        """One AIOS-shaped cluster record per cluster membership knows (what clusterAllocator
        filters see): id, status, node counts, and `cluster_metrics.cluster` (the metric aggregates)."""
        members = self.members.swim.members() if self.membership is not None else []
        names = sorted({str(m.meta.get("cluster", "")) for m in members} | {self.cluster})
        metrics = self.ctx.find(METRICS_KEY)
        aggregates: dict[str, dict[str, float]] = {}
        if metrics is not None:
            aggregates = cluster_aggregates(await metrics.summaries())
        reg = self.ctx.find(REGISTRY_KEY)
        published = {e.key: e.value for e in await reg.scan(CLUSTERS) if ":" not in e.key} if reg is not None else {}
        names = sorted(set(names) | set(published))
        out = []
        for name in names:
            ms = self.members_of(name) if name != self.cluster or members else []
            alive = sum(m.state is MemberState.ALIVE for m in ms) if ms else 1
            agg = aggregates.get(name, {})
            pub = published.get(name, {})  # its leader's record: tags, metadata, nodeData (records.py)
            out.append({**pub, "id": name, "status": "live" if alive else "down",
                        "nodes": {**pub.get("nodes", {}), "count": max(len(ms), 1 if name == self.cluster else 0),
                                  "alive": alive},
                        "vcpus": {"count": agg.get("vcpu.count", 0)},
                        "clusterMetadata": {"name": name, **pub.get("clusterMetadata", {})},
                        "cluster_metrics": {"cluster": nest(dict(agg))}})
        return out

    async def choose_cluster(self, uri: str, parameters: dict[str, Any], settings: dict[str, Any], block_id: str,
                             count: int, allocator: Any) -> str:
        """Run a block's clusterAllocator: filter the cluster records, dry-run the block's resourceAllocator
        in each candidate cluster, let the policy pick. Raises: PlacementError naming why none fits,
        PolicyError."""
        handle = self.runner.load(uri, parameters=parameters, settings=settings, rule_id=f"{block_id}/clusterAllocator")
        records = await self.cluster_records()
        known = {r["id"] for r in records}
        picked = handle.eval({"action": "selection", "filter_result": records, "block_id": block_id})
        candidates = [c["id"] for c in picked.get("clusters", []) if isinstance(c, dict) and c.get("id") in known]
        if not candidates:
            raise PlacementError(f"no cluster satisfies the clusterAllocator filter of block {block_id} "
                                 f"(known clusters: {', '.join(sorted(known))})")
        scored, why = [], []
        for cid in candidates:
            ans = await self.submit(ForwardRequest(op="dry_run", cluster=cid, dry_run=DryRunRequest(
                block_id=block_id, count=max(count, 1), allocator=allocator)))
            score = float(ans.result.get("score", 0.0)) if ans.status < 400 else 0.0
            scored.append({"cluster_id": cid, "score_data": {"score": score}})
            why.append(f"{cid}: score {score:.2f}" + (f" ({ans.result.get('unmet') or ans.message})"
                                                      if score <= 0 else ""))
        best = handle.eval({"action": "post_dry_run", "clusters": scored}).get("cluster_id")
        if best not in candidates:
            raise PlacementError(f"no candidate cluster can take block {block_id}: {'; '.join(why)}")
        log.info("cluster chosen", extra={"block": block_id, "cluster": best, "scores": "; ".join(why)})
        return str(best)

    async def ask_status(self, node: str, addr: str) -> StatusAnswer | None:
        """`node`'s controller status, or None when it does not answer within STATUS_TIMEOUT_S."""
        try:
            ans = await self.members.transport.request(addr, "ctl.status", StatusRequest(), STATUS_TIMEOUT_S,
                                                          to=NodeId(node))
        except FederationError:
            return None
        return ans.body if isinstance(ans.body, StatusAnswer) else None


__all__ = ["ClusterDirectory"]
