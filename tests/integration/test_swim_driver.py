"""The SWIM driver over real Transports on 127.0.0.1 (test timers): join, partition via the fault
hook, heal, and a stranger's session refused without changing anyone's view."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from federation.certs import issue_cert
from federation.envelope import schemas_of
from federation.errors import AuthReason, RemoteProtocolError, RemoteRejected
from federation.identity import CaKey, NodeKey
from federation.membership import MemberChanged, MemberState, Ping, Swim, SwimConfig
from federation.membership.messages import SWIM_TYPES
from federation.sansio import NodeId
from federation.swim_driver import SwimDriver
from federation.transport import Transport, TransportSettings
from tests.waiting import eventually

SCHEMAS = schemas_of(SWIM_TYPES)
SETTINGS = TransportSettings(host="127.0.0.1", port=0, request_timeout_s=1.0, connect_timeout_s=0.5)


def _transport(ca: CaKey, signer: CaKey | None = None) -> Transport:
    key = NodeKey.generate()
    cert = issue_cert(signer or ca, key.public_bytes, network_id=(signer or ca).network_id, cluster="c",
                      roles=("member",), ttl_s=3600, now=time.time())
    return Transport(key, cert, ca.public_bytes, SCHEMAS, SETTINGS)


@asynccontextmanager
async def _cluster(n: int, cfg: SwimConfig | None = None) -> AsyncIterator[tuple[CaKey, list[SwimDriver], list[MemberChanged]]]:
    ca = CaKey.generate()
    events: list[MemberChanged] = []
    async with AsyncExitStack() as stack:
        drivers: list[SwimDriver] = []
        for i in range(n):
            t = await stack.enter_async_context(_transport(ca))
            swim = Swim(t.key.node_id, t.address, cfg or SwimConfig.test(), random.Random(i), incarnation=1)
            d = await stack.enter_async_context(SwimDriver(swim, t, send_timeout_s=0.5))
            d.subscribe(events.append)
            drivers.append(d)
        for d in drivers[1:]:
            d.join([drivers[0].transport.address])
        yield ca, drivers, events


def _view(d: SwimDriver) -> dict[str, MemberState]:
    return {m.node: m.state for m in d.swim.members()}


async def test_partition_marks_dead_and_heal_brings_it_back() -> None:
    async with _cluster(3) as (_, drivers, events):
        ids = [d.swim.self_id for d in drivers]
        await eventually(lambda: all(set(_view(d).values()) == {MemberState.ALIVE} and len(_view(d)) == 3
                                     for d in drivers), timeout_s=10)
        assert any(e.state == MemberState.ALIVE for e in events)
        a, b, c = drivers
        # c cut off from everyone, both ways (the transport's drop hook).
        for d in (a, b):
            d.transport.faults.block(ids[2])
        c.transport.faults.block(ids[0], ids[1])
        await eventually(lambda: _view(a)[ids[2]] == _view(b)[ids[2]] == MemberState.DEAD, timeout_s=15)
        assert _view(a)[ids[1]] == MemberState.ALIVE
        for d in drivers:
            d.transport.faults.clear()
        await eventually(lambda: all(_view(d).get(i) == MemberState.ALIVE for d in drivers for i in ids),
                         timeout_s=15)
        assert a.counters["send_failed"] > 0


async def test_swim_traffic_from_another_ca_changes_nothing() -> None:
    async with _cluster(2) as (ca, drivers, _events):
        a = drivers[0]
        await eventually(lambda: len(_view(a)) == 2, timeout_s=10)
        before = _view(a)
        # trusts our CA but holds another network's cert: a refuses its session
        async with _transport(ca, signer=CaKey.generate()) as stranger:
            with pytest.raises(RemoteRejected) as refused:
                await stranger.send(a.transport.address, "swim.ping", Ping(seq=1, target=a.swim.self_id),
                                    to=NodeId(a.swim.self_id))
        assert refused.value.status == 401 and refused.value.reason == "unknown_ca"
        assert a.transport.stats.handshake_failures[AuthReason.UNKNOWN_CA.value] == 1
        # a node of another network altogether refuses a's cert itself; nothing reaches a's SWIM
        async with _transport(CaKey.generate()) as other:
            with pytest.raises(RemoteProtocolError, match="unknown_ca"):
                await other.send(a.transport.address, "swim.ping", Ping(seq=1, target=a.swim.self_id))
        assert _view(a) == before and a.transport.verifier.accepted == a.transport.metrics()["envelopes_accepted"]


async def test_alive_news_about_a_banned_node_is_dropped() -> None:
    # No indirect probes: b (which has not heard of the revocation) would otherwise vouch for c.
    async with _cluster(3, dataclasses.replace(SwimConfig.test(), indirect_checks=0)) as (_, drivers, _events):
        a = drivers[0]
        ids = [d.swim.self_id for d in drivers]
        await eventually(lambda: all(len(_view(d)) == 3 and set(_view(d).values()) == {MemberState.ALIVE}
                                     for d in drivers), timeout_s=10)
        # As after a revocation: a refuses c's own envelopes (here: the drop hook) and bans its id.
        a.banned = lambda node: node == ids[2]
        a.transport.faults.block(ids[2])
        await eventually(lambda: _view(a)[ids[2]] == MemberState.DEAD, timeout_s=10)
        # c refutes, and b (which still trusts c) relays c's "alive" to a: a drops it, c stays dead.
        await eventually(lambda: a.counters["banned_dropped"] >= 1, timeout_s=10)
        assert _view(a)[ids[2]] == MemberState.DEAD
        assert _view(a)[ids[1]] == MemberState.ALIVE
