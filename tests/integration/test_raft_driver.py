"""RaftDriver over real LMDB stores with an in-process link: election, commit, failover, batching."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiosd.controller.state import ClusterState, InstanceSpec, PlaceBlock, encode_command
from federation.consensus import LmdbRaftStorage, NotLeader, Raft, RaftConfig, Role, bootstrap
from federation.consensus.driver import Notice, RaftDriver
from federation.consensus.messages import AnyRaftMessage
from federation.sansio import NodeId
from storage import Store
from tests.waiting import eventually


class Net:
    def __init__(self) -> None:
        self.drivers: dict[NodeId, RaftDriver] = {}
        self.cut: set[NodeId] = set()


class Link:
    def __init__(self, net: Net, me: NodeId) -> None:
        self.net, self.me = net, me

    async def send(self, to: NodeId, msg: AnyRaftMessage) -> None:
        d = self.net.drivers.get(to)
        if d is None or to in self.net.cut or self.me in self.net.cut:
            raise ConnectionError("unreachable")
        d.deliver(self.me, msg)


@contextlib.asynccontextmanager
async def node(net: Net, root: Path, nid: str, voters: list[str],
               storages: dict[str, LmdbRaftStorage] | None = None) -> AsyncIterator[tuple[RaftDriver, ClusterState]]:
    store = Store.open(root / nid)
    storage = LmdbRaftStorage(store, "ctl")
    if storages is not None:
        storages[nid] = storage
    bootstrap(storage, [NodeId(v) for v in voters])
    sm = ClusterState()
    notices: list[Notice] = []
    core = Raft(NodeId(nid), RaftConfig.lan(), storage, sm, random.Random(hash(nid)))
    try:
        async with RaftDriver(core, Link(net, NodeId(nid)), notices.append) as d:
            net.drivers[NodeId(nid)] = d
            try:
                yield d, sm
            finally:
                net.drivers.pop(NodeId(nid), None)
    finally:
        store.close()


def leaders(net: Net) -> list[RaftDriver]:
    return [d for d in net.drivers.values() if d.status.role is Role.LEADER and d.core.quorum_active(d._loop.time())]


async def test_three_drivers_elect_commit_and_fail_over(tmp_path: Path) -> None:
    net = Net()
    ids = ["a", "b", "c"]
    async with contextlib.AsyncExitStack() as stack:
        sms = {}
        for i in ids:
            _, sms[i] = await stack.enter_async_context(node(net, tmp_path, i, ids))
        first = (await eventually(lambda: leaders(net), timeout_s=5))[0]
        cmd = PlaceBlock(term=first.core.current_term, block_id="b1",
                         instances=(InstanceSpec(instance_id="i1", node_id="a"),))
        await first.propose(encode_command(cmd))
        await eventually(lambda: all("b1" in sm.view().blocks for sm in sms.values()), timeout_s=5)
        follower = next(d for d in net.drivers.values() if d is not first)
        with pytest.raises(NotLeader):
            await follower.propose(encode_command(cmd))
        # Crash the leader: the others elect a new one, which still holds b1.
        net.cut.add(first.core.id)
        new = await eventually(lambda: [d for d in leaders(net) if d is not first], timeout_s=5)
        assert new[0].core.current_term > cmd.term
        await new[0].propose(encode_command(PlaceBlock(term=new[0].core.current_term, block_id="b2", instances=())))
        await eventually(lambda: "b2" in sms[new[0].core.id].view().blocks, timeout_s=5)


async def test_lone_voter_commits_and_a_caller_that_gave_up_does_not_break_the_driver(tmp_path: Path) -> None:
    import asyncio

    net = Net()
    async with node(net, tmp_path, "solo", ["solo"]) as (d, sm):
        await eventually(lambda: d.status.role is Role.LEADER, timeout_s=5)
        # Commits inside the proposing step itself (no peer to wait for): must still resolve.
        index = await d.propose(place_cmd(d.core.current_term, "b1"))
        assert index >= 2 and "b1" in sm.view().blocks
        # A caller that times out before its proposal is handled leaves the driver running.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await d.propose(place_cmd(d.core.current_term, "b2"))
        await d.propose(place_cmd(d.core.current_term, "b3"))
        assert {"b1", "b3"} <= set(sm.view().blocks)


def place_cmd(term: int, block: str) -> bytes:
    return encode_command(PlaceBlock(term=term, block_id=block, instances=()))


async def test_idle_heartbeats_run_on_the_loop_and_write_nothing(tmp_path: Path) -> None:
    import asyncio

    net = Net()
    ids = ["a", "b", "c"]
    storages: dict[str, LmdbRaftStorage] = {}
    async with contextlib.AsyncExitStack() as stack:
        for i in ids:
            await stack.enter_async_context(node(net, tmp_path, i, ids, storages))
        lead = (await eventually(lambda: leaders(net), timeout_s=5))[0]
        await lead.propose(place_cmd(lead.core.current_term, "b1"))
        await eventually(lambda: all(d.status.commit_index == lead.status.commit_index for d in net.drivers.values()),
                         timeout_s=5)
        await asyncio.sleep(0.3)  # the last commit reaches everyone
        flushes = {i: s.flushes for i, s in storages.items()}
        inline = {i: d.inline_steps for i, d in net.drivers.items()}
        await asyncio.sleep(4 * lead.core.cfg.heartbeat_interval_s)
        # Beats and acks skipped the worker thread, and no step wrote (or fsynced) anything.
        assert all(d.inline_steps > inline[i] for i, d in net.drivers.items())
        assert {i: s.flushes for i, s in storages.items()} == flushes
        assert lead.status.role is Role.LEADER
