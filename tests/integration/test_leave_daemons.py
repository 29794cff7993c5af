"""Issue 18: a member that leaves (a clean stop) leaves the Raft voter set, and the rest keep a
controller: 2-, 3- and 5-node clusters of real daemons, the leader or a follower leaving."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemons import Daemon
from tests.integration.test_controller_daemons import api, ctl, leader_of, node_id, start_cluster
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(("n", "who"), [(2, "leader"), (2, "follower"), (3, "leader"), (5, "follower")])
def test_cluster_keeps_a_controller_after_a_member_leaves(tmp_path: Path, daemons: list[Daemon], n: int,
                                                         who: str) -> None:
    nodes = start_cluster(tmp_path, daemons, n)
    lead = leader_of(nodes)
    leaving = lead if who == "leader" else next(d for d in nodes if d is not lead)
    gone_id = node_id(leaving)
    rest = [d for d in nodes if d is not leaving]
    rest_ids = {node_id(d) for d in rest}
    assert leaving.stop() == 0
    assert "removed from the cluster's voters" in leaving.logs()

    def settled() -> bool:
        views = [ctl(d) for d in rest]
        return all(set(v["voters"]) <= rest_ids and gone_id not in v["voters"] and v["leader"] in rest_ids
                   and v["quorum"] is not None for v in views) and any(v["role"] == "leader" and v["quorum"]
                                                                       for v in views)

    wait_sync(settled, timeout_s=20, interval_s=0.2)
    # The controller still takes writes, from any remaining node.
    for d in rest:
        placed = api(d, "POST", "/v1/controller/placements",
                     {"reserve_only": True, "block_id": f"after-{node_id(d)}", "count": 1,
                      "allocator": {"uri": "policy.resourceAllocator.cpu:v1", "parameters": {"cpus": 0.1}}},
                     timeout_s=15)
        assert placed["instances"] and placed["instances"][0]["node_id"] in rest_ids
