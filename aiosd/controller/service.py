"""Service "controller": this node's member of its cluster's Raft group, the role supervisor that runs
the controller role while this node leads, the gateway that forwards management requests to the
leader, and the local side that follows committed placements for this node.

Peers come from the membership service (same cluster = the `cluster` in each member's SWIM meta,
which mirrors its certificate). Without a membership service the group has just this node.
Cold start: a CA holder seeds its own cluster's empty group with itself as voter; in a cluster
without a CA holder, the one node a CA holder grants (first asker, recorded durably there) seeds
it. Every other node starts empty and is added by the leader (learner, then voter). A group that
holds state never re-seeds, so a restart or new addresses elect from the log alone. API routes
live in api.py, what crosses cluster borders in directory.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Self

from pydantic import BaseModel

from aiosd.config import RaftSettings
from aiosd.context import NodeContext, ServiceKey
from aiosd.controller.directory import FORWARD_TIMEOUT_S, ClusterDirectory
from aiosd.controller.inventory import LocalInventory, PeerInventories
from aiosd.controller.leave import Departures, leave_voters, removed
from aiosd.controller.records import NodeRecords
from aiosd.controller.role import ControllerRole, no_quorum
from aiosd.controller.seeding import SEED_RETRY_S, ask_seed, grant_seed
from aiosd.controller.state import ClusterState, ClusterView, Instance
from aiosd.controller.wire import (
    CONTROLLER_MODELS,
    MAX_REPORTED_INSTANCES,
    ForwardAnswer,
    ForwardRequest,
    GpuHold,
    Inventory,
    SeedAnswer,
    StatusAnswer,
)
from aiosd.errors import AiosdError, ConfigError
from aiosd.instances.service import RUNTIME_KEY
from aiosd.membership.service import MEMBERSHIP_KEY, MembershipService
from aiosd.policies import PolicyRunner, builtin_registry
from aiosd.policies.runner import AsyncPolicyRunner
from aiosd.policies.service import POLICIES_KEY
from aiosd.registry.service import REGISTRY_KEY
from federation.consensus import (
    LmdbRaftStorage,
    MembershipChanged,
    Raft,
    RaftConfig,
    Role,
    RoleChanged,
    bootstrap,
)
from federation.consensus.driver import Notice, RaftDriver
from federation.consensus.messages import RAFT_MESSAGE_TYPES, AnyRaftMessage
from federation.envelope import Verified
from federation.errors import AuthError, AuthReason, FederationError, PeerUnreachable
from federation.membership import MemberState
from federation.sansio import NodeId

log = logging.getLogger(__name__)
# How often the member list is pushed to Raft even without a membership event (level-triggered).
MEMBERS_INTERVAL_S = 1.0
LEADER_POLL_S = 0.05  # how often a gateway with no known leader looks again (up to one election timeout)
# Raft messages are small; a heartbeat that cannot leave within this is as good as lost.
RAFT_SEND_TIMEOUT_S = 1.0
# After start, a member membership has not heard of yet is presumed alive this long: longer than
# a SWIM join round on a LAN, so a cold-started cluster does not shed voters or instances.
SETTLE_S = 10.0
_ROLE_EVENTS = 64  # role changes queued for the supervisor (only the newest matters)


def raft_config(s: RaftSettings) -> RaftConfig:
    """RaftConfig of the settings' profile plus overrides. Raises: ConfigError naming the field."""
    base = RaftConfig.lan()
    if s.profile == "test":  # faster elections, LAN size limits (placements must fit one entry)
        base = dataclasses.replace(base, election_timeout_min_s=0.3, election_timeout_max_s=0.6,
                                   heartbeat_interval_s=0.05)
    over: dict[str, Any] = {"max_voters": s.max_voters}
    for name in ("election_timeout_min_s", "election_timeout_max_s", "heartbeat_interval_s"):
        if getattr(s, name) is not None:
            over[name] = getattr(s, name)
    try:
        return dataclasses.replace(base, **over)
    except ValueError as e:
        raise ConfigError(f"bad [raft] settings: {e}") from None


class ControllerService:
    """See the module docstring."""

    name = "controller"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.node_id = NodeId(ctx.identity.node_id)
        self.cluster = ctx.identity.cert.cluster
        self.cfg = raft_config(ctx.settings.raft)
        self.state = ClusterState()
        self.runner = PolicyRunner(builtin_registry())
        self.local = LocalInventory()
        self.membership: MembershipService | None = ctx.find(MEMBERSHIP_KEY)
        self.driver: RaftDriver | None = None
        self.role: ControllerRole | None = None
        self.local_desired: dict[str, Instance] = {}
        self.members_view: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._roles: asyncio.Queue[RoleChanged] = asyncio.Queue(_ROLE_EVENTS)
        self._applied = asyncio.Event()
        self._members_changed = asyncio.Event()
        self.peer_inventories = PeerInventories()
        self._stack = contextlib.AsyncExitStack()
        self._started = time.monotonic()
        self._local_subs: list[Callable[[dict[str, Instance]], None]] = []
        self.records: NodeRecords | None = None
        self.departures = Departures()
        self.directory = ClusterDirectory(ctx, self.cluster, self.membership, self.runner, self.submit)

    # ----- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        try:
            await self._stack.__aenter__()
            await asyncio.to_thread(self.local.open)
            self._stack.callback(self.local.close)
            self._storage = await asyncio.to_thread(LmdbRaftStorage, self.ctx.store, f"ctl.{self.cluster}")
            if self.ctx.identity.ca is not None or self.membership is None:
                await asyncio.to_thread(bootstrap, self._storage, [self.node_id])
            if self.membership is not None:
                self._routes_p2p()
            await self._start_driver()
            self._stack.push_async_callback(self._stop_driver)
            tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tasks = [tg.create_task(self._supervise(), name="controller-roles"),
                           tg.create_task(self._follow(), name="controller-local"),
                           tg.create_task(self._members_loop(), name="controller-members")]
            if self._storage.last_index() == 0 and self._storage.snapshot() is None:
                self._tasks.append(tg.create_task(self._seed_loop(), name="controller-seed"))
            self._stack.push_async_callback(self._stop_tasks)
            await self._start_records()
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("controller started", extra={"cluster": self.cluster, "group": f"ctl.{self.cluster}"})
        return self

    async def _start_records(self) -> None:
        """This node's record in `nodes`, and its cluster's in `clusters` while it leads (records.py)."""
        reg = self.ctx.find(REGISTRY_KEY)
        if reg is None:
            return
        cert = self.ctx.identity.cert
        self.records = NodeRecords(reg, self.membership, self.local, self.node_id, self.cluster, list(cert.roles),
                                   self.ctx.data_dir, lambda: self.role.term if self.role is not None else None)
        await self.records.start()
        self._stack.push_async_callback(self.records.stop)

    async def _start_driver(self) -> None:
        core = Raft(self.node_id, self.cfg, self._storage, self.state, random.Random())
        st = core.status()
        self.members_view = (frozenset(st.voters), frozenset(st.learners))
        driver = RaftDriver(core, self, self._on_notice)
        await driver.__aenter__()
        self.driver = driver

    async def _stop_driver(self) -> None:
        if self.driver is not None and self.membership is not None:  # a clean stop leaves the voters
            alive = frozenset(NodeId(n) for n in self.alive_ids())
            await leave_voters(self.driver, self.node_id, self.departures, alive, self.submit)
        driver, self.driver = self.driver, None
        if driver is not None:
            await driver.__aexit__(None, None, None)

    async def _seed_loop(self) -> None:
        """An empty group in a cluster without a CA holder: ask a CA holder whether this node seeds it."""
        while self._storage.last_index() == 0 and (self.driver is None or self.driver.status.leader is None):
            granted = await ask_seed(self.members, self.node_id)
            if granted:
                await self._stop_driver()  # the core reads its config once: restart it on the seeded log
                if self._storage.last_index() == 0:
                    await asyncio.to_thread(bootstrap, self._storage, [self.node_id])
                    log.info("cluster seeded", extra={"cluster": self.cluster})
                await self._start_driver()
            if granted is not None:
                return  # granted or seeded by someone else (whose leader will add us)
            await asyncio.sleep(SEED_RETRY_S)  # a daemon loop, bounded by the group leaving "empty"

    async def _on_seed(self, v: Verified) -> SeedAnswer:
        if self.ctx.identity.ca is None:
            raise AuthError(AuthReason.FORBIDDEN, "not a CA holder")
        return await grant_seed(self.ctx.store, self.node_id, self.cluster, v.cert.cluster, v.sender)

    async def _stop_tasks(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.role is not None:
            await self.role.__aexit__(None, None, None)
            self.role = None

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        log.info("controller stopped")

    # ----- Raft link (RaftLink) and p2p routes ------------------------------------------------
    async def send(self, to: NodeId, msg: AnyRaftMessage) -> None:
        addr = self.membership.swim.addr_of(to) if self.membership is not None else None
        if addr is None:
            raise PeerUnreachable(to, "no address known")
        await self.members.transport.send(addr, msg.kind, msg, RAFT_SEND_TIMEOUT_S, to=to, ack=False)

    @property
    def members(self) -> MembershipService:
        """The membership service: the controller's p2p paths exist only where it runs."""
        if self.membership is None:
            raise AiosdError("the membership service is not running on this node")
        return self.membership

    def _routes_p2p(self) -> None:
        t = self.members.transport
        # The membership service builds the registry before other services exist; we add our kinds.
        self.members.add_kinds([*RAFT_MESSAGE_TYPES, *CONTROLLER_MODELS])
        for kind in _kinds(RAFT_MESSAGE_TYPES):
            t.route_oneway(kind, self._on_raft)
        t.route("ctl.forward", self._on_forward)
        t.route("ctl.inventory", self._on_inventory)
        t.route("ctl.status", self._on_status)
        t.route("ctl.seed", self._on_seed)
        self.members.subscribe(lambda _ev: self._members_changed.set())

    def _same_cluster(self, v: Verified) -> None:
        if v.cert.cluster != self.cluster:
            raise AuthError(AuthReason.FORBIDDEN, f"sender is in cluster {v.cert.cluster}, not {self.cluster}")

    async def _on_raft(self, v: Verified) -> None:
        if v.cert.cluster == self.cluster and self.driver is not None and isinstance(v.body, RAFT_MESSAGE_TYPES):
            self.driver.deliver(v.sender, v.body)

    async def _on_forward(self, v: Verified) -> ForwardAnswer:
        if not isinstance(v.body, ForwardRequest):
            raise AuthError(AuthReason.BAD_BODY, "not a ctl.forward")
        target = v.body.cluster or v.cert.cluster
        if target != self.cluster:
            raise AuthError(AuthReason.FORBIDDEN, f"request for cluster {target}, this node is in {self.cluster}")
        if v.cert.cluster != self.cluster:  # from another cluster's gateway: one more hop, to our leader
            return await self.submit(v.body.model_copy(update={"cluster": ""}))
        if v.body.op == "leave" and v.body.node != v.sender:
            raise AuthError(AuthReason.FORBIDDEN, "a node can only ask for its own leave")
        role = self.role
        if role is not None and v.body.op == "leave":
            return await self._accept_leave(v.body.node)
        if role is None:
            return no_quorum(f"this node ({self.node_id}) no longer leads cluster {self.cluster}")
        return await role.handle(v.body)

    async def _on_inventory(self, v: Verified) -> Inventory:
        self._same_cluster(v)
        return await self.inventory()

    async def _on_status(self, v: Verified) -> StatusAnswer:
        return self.status_answer()

    # ----- what the role and the API read -----------------------------------------------------
    @property
    def term(self) -> int:
        return self.driver.status.term if self.driver is not None else 0

    def has_quorum(self) -> bool:
        return self.driver is not None and self.driver.quorum

    def _members(self, *states: MemberState) -> list[Any]:
        if self.membership is None:
            return []
        return [m for m in self.members.swim.members()
                if m.state in states and m.meta.get("cluster") == self.cluster]

    def departed(self, nodes: set[str]) -> set[str]:
        """Those of `nodes` this cluster has lost: membership says dead or left, or (after the
        settle time) does not know them. A node we have not heard of yet right after start is
        not lost: a freshly restarted leader must not move everything onto the few it knows."""
        if self.membership is None:
            return set()
        settled = time.monotonic() - self._started > SETTLE_S
        out = set()
        for node in nodes:
            if node == self.node_id:
                continue
            m = self.membership.swim.member(NodeId(node))
            if (m is None and settled) or (m is not None and (
                    m.state in (MemberState.DEAD, MemberState.LEFT) or m.meta.get("cluster") != self.cluster)):
                out.add(node)
        return out

    def alive_ids(self) -> frozenset[str]:
        """What Raft manages voters from: this cluster's alive or suspect members, plus current
        voters and learners membership has not (yet) declared lost."""
        ids = {m.node for m in self._members(MemberState.ALIVE, MemberState.SUSPECT)}
        voters, learners = self.members_view
        known = set(voters | learners)
        ids |= known - self.departed(known)
        return frozenset(ids | {self.node_id})

    @property
    def published(self) -> AsyncPolicyRunner | None:
        svc = self.ctx.find(POLICIES_KEY)
        runner = getattr(svc, "runner", None)
        return runner if isinstance(runner, AsyncPolicyRunner) else None

    async def inventory(self) -> Inventory:
        gpus = await asyncio.to_thread(self.local.gpus)
        return Inventory(node_id=self.node_id, cluster=self.cluster, vcpus=self.local.vcpus(),
                         memory_mb=self.local.memory_mb(), gpus=gpus, applied_index=self.state.view().applied_index,
                         instances=tuple(sorted(self.local_desired)), held=self._local_holds())

    def _local_holds(self) -> tuple[GpuHold, ...]:
        """GPUs held here by instances the committed state does not place (blocks applied on this
        node alone): the leader must not place onto a GPU one of them holds exclusively."""
        runtime = self.ctx.find(RUNTIME_KEY)
        sup = getattr(runtime, "sup", None)
        if sup is None:
            return ()
        return tuple(GpuHold(instance_id=iid, gpus=gpus, exclusive=excl)
                     for iid, (gpus, excl) in sorted(sup.gpus.holdings().items())
                     if iid not in self.local_desired)[:MAX_REPORTED_INSTANCES]

    async def inventories(self) -> list[Inventory]:
        """Inventories of this cluster's ALIVE nodes (those that do not answer in time are left out)."""
        peers = [m for m in self._members(MemberState.ALIVE) if m.node != self.node_id]
        return [await self.inventory(), *await self.peer_inventories.collect(self.members.transport, peers,
                                                                             time.monotonic())]

    def view(self) -> ClusterView:
        """A consistent copy of the committed state."""
        return self.state.view()

    def subscribe_local(self, callback: Callable[[dict[str, Instance]], None]) -> None:
        """Call `callback(instances)` on the loop whenever the committed set for this node changes
        (the seam the apply path uses to drive the runtime's supervisor)."""
        self._local_subs.append(callback)

    async def propose(self, command: bytes) -> int:
        if self.driver is None:
            raise FederationError("controller is not running")
        return await self.driver.propose(command)

    async def submit(self, req: ForwardRequest) -> ForwardAnswer:
        """Gateway: carry out `req` here if this node leads, else at the leader; a request for
        another cluster goes to one of its alive nodes, which relays it to its own leader."""
        if req.cluster and req.cluster != self.cluster:
            return await self._submit_elsewhere(req)
        # Right after an election a node may not have heard from the new leader yet (or, elected
        # itself, not have started the role): wait about one election timeout before saying "no quorum".
        deadline = time.monotonic() + self.cfg.election_timeout_max_s
        while True:
            role = self.role
            if role is not None:
                return await self._accept_leave(req.node) if req.op == "leave" else await role.handle(req)
            leader = self.driver.status.leader if self.driver is not None else None
            addr = self.membership.swim.addr_of(leader) if leader is not None and self.membership is not None \
                else None
            if leader != self.node_id and leader is not None and addr is not None:
                break
            if time.monotonic() >= deadline:
                if leader == self.node_id:
                    return no_quorum("this node was just elected and is starting the controller; retry")
                return no_quorum(f"cluster {self.cluster} has no reachable leader from this node")
            await asyncio.sleep(LEADER_POLL_S)
        try:
            ans = await self.members.transport.request(addr, "ctl.forward", req, FORWARD_TIMEOUT_S, to=leader)
        except FederationError as e:
            return no_quorum(f"the leader {leader} is unreachable from this node ({e})")
        if not isinstance(ans.body, ForwardAnswer):
            return ForwardAnswer(status=502, code="bad_answer", message="the leader answered something else")
        return ans.body

    async def _accept_leave(self, node: str) -> ForwardAnswer:
        """The leader takes `node` out of the voters and answers once that is committed (the
        removed node gets no more entries, so it learns it from this answer)."""
        self.departures.announce(node, time.monotonic())
        self._members_changed.set()
        log.info("member leaving the voters", extra={"node": node})
        if self.driver is None or not await removed(self.driver, NodeId(node)):
            return no_quorum(f"the removal of {node} from the voters did not commit in time")
        return ForwardAnswer(status=200, result={"node": node, "removed": True})

    def gone(self) -> frozenset[NodeId]:
        """Members of this cluster that left it for good (left, revoked, or announced a leave)."""
        if self.membership is None:
            return frozenset()
        states = [(m.node, m.state) for m in self.members.swim.members() if m.meta.get("cluster") == self.cluster]
        return self.departures.gone(states, self.membership.revoked, time.monotonic())

    async def _submit_elsewhere(self, req: ForwardRequest) -> ForwardAnswer:
        return await self.directory.submit_elsewhere(req)

    # ----- other clusters (directory.py) -----------------------------------------------------
    def cluster_nodes(self, cluster: str) -> set[str]:
        """Node ids membership knows in `cluster` (alive or not: the forwarder filters)."""
        return self.directory.cluster_nodes(cluster)

    async def cluster_records(self) -> list[dict[str, Any]]:
        """One AIOS-shaped cluster record per cluster membership knows (ClusterDirectory.cluster_records)."""
        return await self.directory.cluster_records()

    async def choose_cluster(self, uri: str, parameters: dict[str, Any], settings: dict[str, Any], block_id: str,
                             count: int, allocator: Any) -> str:
        """Run a block's clusterAllocator (ClusterDirectory.choose_cluster). Raises: PlacementError, PolicyError."""
        return await self.directory.choose_cluster(uri, parameters, settings, block_id, count, allocator)

    async def ask_status(self, node: str, addr: str) -> StatusAnswer | None:
        return await self.directory.ask_status(node, addr)

    def status_answer(self) -> StatusAnswer:
        st = self.driver.status if self.driver is not None else None
        view = self.state.view()
        return StatusAnswer(
            cluster=self.cluster, node_id=self.node_id, role=st.role.value if st else "stopped",
            leader=st.leader if st else None, term=st.term if st else 0, commit_index=st.commit_index if st else 0,
            voters=tuple(sorted(st.voters)) if st else (), learners=tuple(sorted(st.learners)) if st else (),
            blocks=len(view.blocks), instances=sum(len(b) for b in view.blocks.values()),
        )

    # ----- loops ------------------------------------------------------------------------------
    def _on_notice(self, n: Notice) -> None:
        if isinstance(n, RoleChanged):
            if self._roles.full():
                self._roles.get_nowait()  # only the newest role matters
            self._roles.put_nowait(n)
        elif isinstance(n, MembershipChanged):
            self.members_view = (frozenset(n.voters), frozenset(n.learners))
            log.info("controller voters changed", extra={"voters": len(n.voters), "learners": len(n.learners)})
        else:
            self._applied.set()

    async def _supervise(self) -> None:
        """The role supervisor (STYLE §23): start the controller role while leading, stop it otherwise."""
        while True:
            ev = await self._roles.get()
            leading = ev.role is Role.LEADER and ev.leader == self.node_id
            if self.role is not None and (not leading or self.role.term != ev.term):
                role, self.role = self.role, None
                await role.__aexit__(None, None, None)
            if leading and self.role is None:
                role = ControllerRole(self, ev.term)
                await role.__aenter__()
                self.role = role
            if ev.role in (Role.LEADER, Role.FOLLOWER) and ev.leader is not None:
                log.info("controller leader known", extra={"leader": ev.leader, "term": ev.term})

    async def _follow(self) -> None:
        """Follow committed placements for this node: what this node must run (fenced by term in the state)."""
        while True:
            await self._applied.wait()
            self._applied.clear()
            mine = {i.instance_id: i for i in self.state.view().instances_on(self.node_id)}
            if mine != self.local_desired:
                gone = sorted(set(self.local_desired) - set(mine))
                added = sorted(set(mine) - set(self.local_desired))
                self.local_desired = mine
                log.info("local placements changed", extra={"start": len(added), "stop": len(gone),
                                                           "total": len(mine)})
                for cb in list(self._local_subs):
                    try:
                        cb(dict(mine))
                    except Exception:  # a subscriber's bug must not stop this node following the log
                        log.exception("local placement subscriber failed")
            if self.role is not None:
                self.role.poke()

    async def _members_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MEMBERS_INTERVAL_S):
                    await self._members_changed.wait()
            self._members_changed.clear()
            if self.driver is not None:
                gone = self.gone()
                self.driver.set_members(frozenset(NodeId(n) for n in self.alive_ids()) - gone, gone)
            if self.role is not None:
                self.role.poke()


CONTROLLER_KEY: ServiceKey[ControllerService] = ServiceKey("controller")


def controller_service(ctx: NodeContext) -> ControllerService:
    return ControllerService(ctx)


def _kinds(models: tuple[type[BaseModel], ...]) -> list[str]:
    return [str(m.model_fields["kind"].default) for m in models]


__all__ = ["CONTROLLER_KEY", "ControllerService", "controller_service", "raft_config"]
