"""Cold start of a cluster's Raft group in a cluster without a CA holder: which node seeds it.

A CA holder grants one node per other cluster the seed (the first to ask, recorded durably in
`ctl.seeds`, forever); the granted node bootstraps the group with itself as voter, and its leader
adds the others. `grant_seed` is the CA holder's side, `ask_seed` the asking node's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosd.controller.wire import SeedAnswer, SeedRequest
from aiosd.membership.service import MembershipService
from federation.errors import FederationError
from federation.membership import MemberState
from federation.sansio import NodeId
from storage import Store, Table

log = logging.getLogger(__name__)
# CA holders only: cluster name -> the node granted to seed its Raft group (first asker wins, forever).
SEEDS: Table[Any] = Table.msgpack("ctl.seeds")
SEED_RETRY_S = 1.0  # how often an unseeded node asks a CA holder while its group is empty
SEED_TIMEOUT_S = 2.0


async def grant_seed(store: Store, own: NodeId, own_cluster: str, cluster: str, sender: NodeId) -> SeedAnswer:
    """A CA holder's answer to `sender` of `cluster`: granted when it is (or now becomes) that cluster's seed."""
    if cluster == own_cluster:
        return SeedAnswer(granted=False, seed=own)  # our own cluster: we seeded it

    def grant(txn: Any) -> str:
        current = txn.get(SEEDS, cluster)
        if current is None:
            txn.put(SEEDS, cluster, sender)
            return str(sender)
        return str(current)

    seed = await asyncio.to_thread(store.update, grant)
    if seed == sender:
        log.info("cluster seed granted", extra={"cluster": cluster, "peer": sender})
    return SeedAnswer(granted=seed == sender, seed=seed)


async def ask_seed(members: MembershipService, own: NodeId) -> bool | None:
    """Ask the alive CA holders in turn whether `own` seeds its cluster: True (granted), False (another
    node seeds it), None (no CA holder answered)."""
    for m in members.swim.members():
        if m.state is not MemberState.ALIVE or m.meta.get("ca") != "1" or m.node == own:
            continue
        try:
            ans = await members.transport.request(m.addr, "ctl.seed", SeedRequest(), SEED_TIMEOUT_S, to=m.node)
        except FederationError:
            continue
        if isinstance(ans.body, SeedAnswer):
            return ans.body.granted and ans.body.seed == own
    return None


__all__ = ["SEEDS", "SEED_RETRY_S", "ask_seed", "grant_seed"]
