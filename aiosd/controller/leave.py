"""Leaving the cluster's voter set: a node that leaves (a clean stop, a removal) stops being a voter.

Raft cannot drop a voter without a quorum of the current voters, so the leaving node takes part:
before its Raft driver stops it asks the leader (`ctl.forward` op "leave", signed by itself) to
remove it, or, when it leads, removes itself; then it waits (bounded) until the change is in its
log. The leader also removes voters that membership reports `left` or that were revoked. Two
nodes, one leaves: the other is a quorum alone and keeps a controller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable

from aiosd.controller.wire import ForwardAnswer, ForwardRequest
from federation.consensus import Role
from federation.consensus.driver import RaftDriver
from federation.membership import MemberState
from federation.sansio import NodeId

log = logging.getLogger(__name__)

# An announced leave counts this long (the node may come back later: then it joins as a learner again).
LEAVE_TTL_S = 30.0
# A leaving node waits at most this long for its removal before it stops anyway.
LEAVE_WAIT_S = 3.0
_POLL_S = 0.05


class Departures:
    """Which members of this cluster left it for good, as the leader should see it."""

    def __init__(self) -> None:
        self._announced: dict[str, float] = {}

    def announce(self, node: str, now: float) -> None:
        self._announced[node] = now

    def gone(self, states: Iterable[tuple[str, MemberState]], revoked: Container[str], now: float) -> frozenset[NodeId]:
        """Members SWIM reports `left`, revoked nodes among them, and recent announced leaves."""
        for node, at in list(self._announced.items()):
            if now - at > LEAVE_TTL_S:
                del self._announced[node]
        out = {n for n, st in states if st is MemberState.LEFT or n in revoked}
        return frozenset(NodeId(n) for n in out | set(self._announced))


Submit = Callable[[ForwardRequest], Awaitable[ForwardAnswer]]


async def leave_voters(driver: RaftDriver, node_id: NodeId, departures: Departures, alive: frozenset[NodeId],
                       submit: Submit) -> bool:
    """Take `node_id` out of the voter set before its driver stops; True once it is out."""
    st = driver.status
    if node_id not in st.voters or len(st.voters) < 2:
        return node_id not in st.voters
    try:
        async with asyncio.timeout(LEAVE_WAIT_S):
            if st.role is Role.LEADER and st.leader == node_id:
                departures.announce(node_id, time.monotonic())
                driver.set_members(alive, departures.gone((), (), time.monotonic()))
            else:  # the leader answers once the change committed (we get no more entries after it)
                answer = await submit(ForwardRequest(op="leave", node=node_id))
                if answer.status >= 400:
                    log.warning("leave not accepted by the leader", extra={"error": answer.message})
                    return False
                log.info("removed from the cluster's voters", extra={"node": node_id})
                return True
            while node_id in driver.status.voters or driver.status.commit_index < driver.status.last_index:
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        log.warning("left without being removed from the voters in time", extra={"wait_s": LEAVE_WAIT_S})
        return False
    log.info("removed from the cluster's voters", extra={"node": node_id})
    return True


async def removed(driver: RaftDriver, node: NodeId, wait_s: float = LEAVE_WAIT_S - 0.5) -> bool:
    """On the leader: True once `node` is out of the voters and that change is committed."""
    try:
        async with asyncio.timeout(wait_s):
            while node in driver.status.voters or driver.status.commit_index < driver.status.last_index:
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        return False
    return True


__all__ = ["LEAVE_TTL_S", "LEAVE_WAIT_S", "Departures", "leave_voters", "removed"]
