"""Version skew: a daemon from an older, pinned commit of main (tests/chaos/skew.py) and current
daemons in one namespaced network. The old node joins with its own `aiosd join`, gossips
(membership sees all alive), votes and follows in Raft, hosts an echo instance placed by the
current leader, and answers and forwards inference; registry writes cross both ways. Then one
seeded fault schedule runs with every checker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.chaos.faults import Kind
from tests.chaos.history import Api, Outcome
from tests.chaos.net import ChaosNet, why_not
from tests.chaos.run import run_schedule, setup_echo
from tests.chaos.skew import PINNED, old_tree
from tests.chaos.workloads import ECHO, placements_of

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240), pytest.mark.keeps_processes, pytest.mark.long]
OLD = 3  # node index that runs the pinned commit


@pytest.fixture(scope="module")
def mixed() -> Iterator[ChaosNet]:
    if why := why_not():
        pytest.skip(why)
    tree = old_tree()
    if isinstance(tree, str):
        pytest.skip(tree)
    with ChaosNet(3, code={OLD: tree}) as net:
        setup_echo(net, instances=3)
        yield net


def test_an_older_daemon_joins_gossips_follows_raft_and_serves_inference(mixed: ChaosNet) -> None:
    old = mixed.nodes[OLD - 1]
    assert str(old.daemon.prefix[-1]).endswith(PINNED[:12])
    assert "PYTHONPATH" in old.daemon.env

    async def go() -> None:
        async with Api({x.index: x.daemon.socket for x in mixed.nodes}) as api:
            views = [await api.call(x.index, "GET", "/v1/controller") for x in mixed.nodes]
            assert all(v.outcome is Outcome.OK for v in views), views
            ids = {x.node_id for x in mixed.nodes}
            assert {v.body["leader"] for v in views} <= ids and len({v.body["leader"] for v in views}) == 1
            assert all(set(v.body["voters"]) == ids for v in views), [v.body["voters"] for v in views]
            placed = placements_of((await api.call(1, "GET", "/v1/controller/placements")).body, ECHO)
            assert old.node_id in placed.values(), placed   # spread over 3 nodes: one on the old node
            for x in mixed.nodes:          # inference from every node: local, or forwarded across versions
                for k in range(4):
                    msg = f"skew-{x.index}-{k}"
                    r = await api.call(x.index, "POST", f"/v1/infer/block/{ECHO}", {"data": {"message": msg}},
                                       timeout_s=20)
                    assert r.outcome is Outcome.OK and msg in json.dumps(r.body), (x.name, r)
            # One instance left: the nodes that run none forward (signed blk.task) across versions.
            r = await api.call(1, "POST", "/v1/controller/placements", {"block_id": ECHO, "count": 1, "allocator":
                                                                          {"uri": "policy.resourceAllocator.cpu:v1",
                                                                           "parameters": {"cpus": 0.1}}})
            assert r.outcome is Outcome.OK, r
            host = next(iter(placements_of(r.body, ECHO).values()))
            for x in mixed.nodes:
                if x.node_id == host:
                    continue
                for k in range(3):
                    msg = f"fwd-{x.index}-{k}"
                    for _ in range(40):  # until the host's old instances stopped and the view moved
                        got = await api.call(x.index, "POST", f"/v1/infer/block/{ECHO}", {"data": {"message": msg}},
                                             timeout_s=20)
                        if got.outcome is Outcome.OK and got.body.get("instance_id") in placements_of(r.body, ECHO):
                            break
                        await asyncio.sleep(0.25)
                    assert got.outcome is Outcome.OK and msg in json.dumps(got.body), (x.name, got)
            print(f"forwarded to {'the old' if host == old.node_id else 'a current'} node from the others")
            for x in mixed.nodes:          # registry writes both ways
                r = await api.call(x.index, "PUT", f"/v1/registry/tasks/skew-{x.index}", {"from": x.index})
                assert r.outcome is Outcome.OK, r
            for _ in range(100):
                lists = [await api.call(x.index, "GET", "/v1/registry/tasks?limit=1000") for x in mixed.nodes]
                keys = [{i["key"] for i in g.body["items"]} if g.outcome is Outcome.OK else set() for g in lists]
                if all({f"skew-{i}" for i in (1, 2, 3)} <= k for k in keys):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"registry writes did not cross versions: {keys}")

    asyncio.run(go())


def test_a_fault_schedule_on_a_mixed_network_has_no_violations(mixed: ChaosNet) -> None:
    res = asyncio.run(run_schedule(mixed, 5, count=2, kinds=(Kind.KILL, Kind.STOP, Kind.ISOLATE, Kind.LOSS)))
    print(res.summary())
    assert not res.violations, "\n".join(str(v) for v in res.violations)
