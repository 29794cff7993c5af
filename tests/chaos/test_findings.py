"""Daemon bugs the chaos runs found, each pinned by a focused test on the namespaced network.
Each is `xfail(strict=True)`: when the bug is fixed the test passes, strict turns that into a
failure, and the marker (and the matching avoidance in tests/chaos/run.py) must go."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.faults import fill_disk
from tests.chaos.history import Api, Outcome
from tests.chaos.net import ChaosNet, why_not
from tests.chaos.run import setup_echo
from tests.chaos.workloads import ECHO, SPREAD, placements_of

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180), pytest.mark.long]


class StillBroken(AssertionError):
    """The bug's own symptom (any other failure is a real test failure, not the expected one)."""


@pytest.mark.xfail(strict=True, raises=StillBroken, reason="found by chaos seed 6: aiosd/control/follow.py logs 'cannot run the "
                   "instances placed here' (ENOSPC) once and the instance never starts after the disk frees")
def test_an_instance_placed_while_the_disk_is_full_starts_once_it_frees() -> None:
    if why := why_not():
        pytest.skip(why)
    with ChaosNet(3) as net:
        setup_echo(net, instances=2)

        async def go() -> None:
            async with Api({x.index: x.daemon.socket for x in net.nodes}) as api:
                before = placements_of((await api.call(1, "GET", "/v1/controller/placements")).body, ECHO)
                spare = next(x for x in net.nodes if x.node_id not in before.values())
                filler = fill_disk(spare.data_dir)
                r = await api.call(1, "POST", "/v1/controller/placements",
                                   {"block_id": ECHO, "count": 3, "allocator": SPREAD})
                assert r.outcome is Outcome.OK, r
                assert spare.node_id in placements_of(r.body, ECHO).values()
                await asyncio.sleep(3)
                filler.unlink()
                for _ in range(40):  # 20 s after the disk frees
                    ps = await api.call(spare.index, "GET", "/v1/ps")
                    rows = [i for i in ps.body["instances"] if i["block_id"] == ECHO] if ps.body else []
                    if rows and all(i["state"] == "healthy" for i in rows):
                        return
                    await asyncio.sleep(0.5)
                raise StillBroken(f"{spare.name}: the instance placed while its disk was full never started")

        asyncio.run(go())
