"""Local API of the controller service: controller status, clusters, placements, dry-run, tasks.

Writes go through the gateway (`ControllerService.submit`): carried out here when this node
leads, else forwarded to the leader; no leader reachable = 503 "no quorum". The test-only
fault route exists only when AIOSD_TEST_FAULTS=1 is set in the daemon's environment.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.routes import ApiProblem, Route, json_ok, read_model
from aiosd.controller.service import ControllerService
from aiosd.controller.wire import (
    DryRunRequest,
    ForwardAnswer,
    ForwardRequest,
    PlaceRequest,
    StatusAnswer,
)
from federation.membership import MemberState

FAULTS_ENV = "AIOSD_TEST_FAULTS"


class ControllerStatus(BaseModel):
    node_id: str
    cluster: str
    role: str
    leader: str | None
    term: int
    commit_index: int
    last_applied: int
    last_index: int
    voters: list[str]
    learners: list[str]
    quorum: bool
    fenced: int


class Faults(BaseModel):
    """Test hook: drop p2p traffic to and from these node ids (both ways), or clear all."""

    model_config = ConfigDict(extra="forbid")
    block: list[str] = Field(default_factory=list, max_length=256)
    clear: bool = False


class PlacementBody(PlaceRequest):
    """`POST /v1/controller/placements`: a block the cluster knows (its spec in the request or
    already committed), or `reserve_only` for a placement that only reserves resources (nothing runs it)."""

    reserve_only: bool = False


def _answer(a: ForwardAnswer) -> web.Response:
    if a.status >= 400:
        raise ApiProblem(a.status, a.code or "error", a.message)
    return json_ok(a.result)


class ControllerHandlers:
    """The controller's HTTP handlers over one `ControllerService`."""

    def __init__(self, svc: ControllerService) -> None:
        self.svc = svc

    async def get_controller(self, _: web.Request) -> web.Response:
        d = self.svc.driver
        if d is None:
            raise ApiProblem(503, "not_running", "the controller is not running")
        st = d.status
        return json_ok(ControllerStatus(
            node_id=self.svc.node_id, cluster=self.svc.cluster, role=st.role.value, leader=st.leader, term=st.term,
            commit_index=st.commit_index, last_applied=st.last_applied, last_index=st.last_index,
            voters=sorted(st.voters), learners=sorted(st.learners), quorum=d.quorum, fenced=self.svc.state.fenced,
        ))

    async def get_placements(self, _: web.Request) -> web.Response:
        view = self.svc.state.view()
        return json_ok({"applied_index": view.applied_index, "term": view.max_term, "blocks": {
            b: {"allocator": view.allocators[b].model_dump() if b in view.allocators else None,
                "instances": [{"instance_id": i.instance_id, "node_id": i.node_id, "gpus": list(i.gpus),
                               "term": i.term} for i in sorted(insts.values(), key=lambda i: i.instance_id)]}
            for b, insts in sorted(view.blocks.items())}})

    async def post_placement(self, request: web.Request) -> web.Response:
        body = await read_model(request, PlacementBody)
        view = self.svc.state.view()
        if body.spec is None and not body.reserve_only and body.block_id not in view.specs \
                and body.block_id not in view.blocks:
            raise ApiProblem(404, "unknown_block", f"no block {body.block_id!r} is known to the cluster: apply it "
                             "with `aiosd apply --cluster`, send its spec, or set reserve_only for a placement "
                             "nothing runs", "block_id")
        if body.spec is not None:  # it travels in the Raft log as msgpack: ints in 64 bits, valid UTF-8
            try:
                msgpack.packb(body.spec.model_dump(mode="python"), use_bin_type=True)
            except (OverflowError, ValueError, TypeError) as e:
                raise ApiProblem(422, "invalid", f"spec cannot be stored in the cluster's log: {e}", "spec") from None
        place = PlaceRequest(block_id=body.block_id, count=body.count, allocator=body.allocator, spec=body.spec)
        return _answer(await self.svc.submit(ForwardRequest(op="place", place=place)))

    async def delete_placement(self, request: web.Request) -> web.Response:
        block_id = request.match_info["block_id"]
        if not 1 <= len(block_id) <= 128:
            raise ApiProblem(422, "invalid", "block_id: 1..128 characters", "block_id")
        return _answer(await self.svc.submit(ForwardRequest(op="remove", block_id=block_id)))

    async def dry_run(self, request: web.Request) -> web.Response:
        body = await read_model(request, DryRunRequest)
        return _answer(await self.svc.submit(ForwardRequest(op="dry_run", dry_run=body)))

    async def get_local(self, _: web.Request) -> web.Response:
        return json_ok({"node_id": self.svc.node_id, "term": self.svc.state.view().max_term, "instances": [
            {"instance_id": i.instance_id, "block_id": i.block_id, "gpus": list(i.gpus), "term": i.term}
            for i in sorted(self.svc.local_desired.values(), key=lambda i: i.instance_id)]})

    async def get_tasks(self, _: web.Request) -> web.Response:
        return json_ok({"tasks": [{"task_id": t.task_id, "kind": t.kind, "state": t.state, "detail": t.detail,
                                   "term": t.term, "index": t.index} for t in self.svc.state.view().tasks]})

    async def clusters(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        members = self.svc.membership.swim.members() if self.svc.membership is not None else []
        for m in members:
            name = m.meta.get("cluster", "")
            c = out.setdefault(name, {"name": name, "nodes": [], "alive": 0})
            c["nodes"].append({"node_id": m.node, "addr": m.addr, "state": m.state.value})
            c["alive"] += m.state is MemberState.ALIVE
        out.setdefault(self.svc.cluster, {"name": self.svc.cluster, "nodes": [], "alive": 1})
        for name, c in out.items():
            st: StatusAnswer | None = self.svc.status_answer() if name == self.svc.cluster else None
            if st is None:
                for m in members:
                    if m.meta.get("cluster") == name and m.state is MemberState.ALIVE:
                        st = await self.svc.ask_status(m.node, m.addr)
                        if st is not None:
                            break
            c.update(leader=st.leader if st else None, term=st.term if st else None,
                     voters=list(st.voters) if st else [], learners=list(st.learners) if st else [],
                     blocks=st.blocks if st else None, instances=st.instances if st else None)
        return out

    async def list_clusters(self, _: web.Request) -> web.Response:
        found = await self.clusters()
        return json_ok({"clusters": [{k: v for k, v in c.items() if k != "nodes"} | {"nodes": len(c["nodes"])}
                                     for _, c in sorted(found.items())]})

    async def describe_cluster(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = await self.clusters()
        if name not in found:
            raise ApiProblem(404, "not_found", f"no cluster named {name!r}; known: {', '.join(sorted(found))}")
        return json_ok(found[name])

    async def set_faults(self, request: web.Request) -> web.Response:
        if os.environ.get(FAULTS_ENV) != "1" or self.svc.membership is None:
            raise ApiProblem(404, "not_found", "fault injection is off (test daemons only)")
        body = await read_model(request, Faults)
        faults = self.svc.membership.transport.faults
        if body.clear:
            faults.clear()
        faults.block(*body.block)
        return json_ok({"blocked": sorted(faults.blocked)})

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/controller", self.get_controller, "this node's view of its cluster's controller",
                  response=ControllerStatus, tag="controller"),
            Route("GET", "/v1/controller/placements", self.get_placements, "committed placements (block -> instances)",
                  tag="controller"),
            Route("POST", "/v1/controller/placements", self.post_placement, "place or scale a block (forwarded to the leader)",
                  request=PlacementBody, tag="controller"),
            Route("DELETE", "/v1/controller/placements/{block_id}", self.delete_placement, "remove a block's placement",
                  tag="controller"),
            Route("GET", "/v1/controller/local", self.get_local, "instances the committed state assigns to this node",
                  tag="controller"),
            Route("GET", "/v1/controller/tasks", self.get_tasks, "controller tasks (reassignments)", tag="controller"),
            Route("POST", "/v1/allocate/dry-run", self.dry_run, "candidates and scores across the cluster's live nodes",
                  request=DryRunRequest, tag="controller"),
            Route("GET", "/v1/clusters", self.list_clusters, "clusters of the network and who leads them", tag="controller"),
            Route("GET", "/v1/clusters/{name}", self.describe_cluster, "one cluster: nodes, leader, voters", tag="controller"),
            Route("POST", "/v1/test/faults", self.set_faults, "test hook: drop p2p traffic with chosen nodes",
                  request=Faults, tag="controller"),
        ]


def controller_routes(svc: ControllerService) -> list[Route]:
    return ControllerHandlers(svc).routes()


__all__ = ["FAULTS_ENV", "ControllerHandlers", "ControllerStatus", "Faults", "PlacementBody", "controller_routes"]
