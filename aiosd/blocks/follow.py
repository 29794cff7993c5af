"""The node side of the controller: run what the committed cluster state assigns to this node.

Level-triggered: whenever the committed placements change (the controller service calls back),
and every FOLLOW_INTERVAL_S anyway, each block with instances placed here gets its instance specs
computed from the BlockSpec that travelled with the placement in the Raft log, and the runtime's
supervisor is told to run exactly those. A block this node ran for the cluster and no longer holds
is emptied. The set of blocks followed is kept in LMDB, so a node that restarts (an old leader whose
instances were moved while it was away) stops its stale instances as soon as it has caught up with
the log; fencing by term already happened in the state machine (ClusterState refuses old terms).

No placement decisions here: the leader decides, every node only follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from aiosd.blocks.apply import code_for, instance_specs
from aiosd.controller.placement import Placement
from aiosd.controller.state import BlockSpec, ClusterView, Instance
from aiosd.specs import ResolvedBlock
from runtime import InstanceSpec
from storage import Store, Table

log = logging.getLogger(__name__)
# Retry a block whose start failed (image build, runtime refusal) and catch anything missed.
FOLLOW_INTERVAL_S = 2.0
FOLLOWED: Table[Any] = Table.msgpack("ctl.followed")  # "blocks" -> [block ids this node runs for the cluster]
_KEY = "blocks"


class ControllerView(Protocol):
    """What following needs from the controller service."""

    node_id: str

    def view(self) -> ClusterView: ...

    def subscribe_local(self, callback: Callable[[dict[str, Instance]], None]) -> None: ...


class BlockHost(Protocol):
    """What following needs from the block service."""

    async def resolve_spec(self, block_id: str, spec: BlockSpec) -> ResolvedBlock: ...

    async def ensure_image(self, res: ResolvedBlock, progress: Callable[[str], Any] | None = None) -> None: ...

    def followed(self, block_id: str, res: ResolvedBlock | None) -> None: ...


class RuntimeHost(Protocol):
    """What following needs from the runtime service."""

    @property
    def driver_name(self) -> str: ...

    def desired(self, block_id: str) -> list[InstanceSpec]: ...

    async def set_desired(self, block_id: str, specs: list[InstanceSpec]) -> None: ...


def spec_digest(spec: BlockSpec) -> str:
    packed: bytes = msgpack.packb(spec.model_dump(mode="python"), use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()


class PlacementFollower:
    """`async with PlacementFollower(controller, blocks, runtime, store)`: see the module docstring."""

    def __init__(self, controller: ControllerView, blocks: BlockHost, runtime: RuntimeHost, store: Store) -> None:
        self.controller, self.blocks, self.runtime, self.store = controller, blocks, runtime, store
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._followed: set[str] = set()
        self._resolved: dict[str, tuple[str, ResolvedBlock]] = {}  # block -> (spec digest, resolved)
        self._failing: dict[str, str] = {}  # block -> last error (logged once per distinct error)
        self.turns = 0

    async def __aenter__(self) -> Self:
        stored = await asyncio.to_thread(self.store.get, FOLLOWED, _KEY)
        self._followed = {str(b) for b in stored or ()}
        self.controller.subscribe_local(lambda _: self._wake.set())
        self._task = asyncio.create_task(self._loop(), name="controller-follow")
        self._wake.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def poke(self) -> None:
        self._wake.set()

    @property
    def followed(self) -> frozenset[str]:
        return frozenset(self._followed)

    def failing(self) -> Mapping[str, str]:
        return dict(self._failing)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FOLLOW_INTERVAL_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # one turn is the unit of work: log it and try again on the next
                log.exception("following the cluster's placements failed")

    async def sync(self) -> None:
        """One turn: make the runtime run what the committed state places here."""
        self.turns += 1
        view = self.controller.view()
        me = self.controller.node_id
        mine: dict[str, list[Instance]] = {}
        for bid, insts in view.blocks.items():
            here = sorted((i for i in insts.values() if i.node_id == me), key=lambda i: i.instance_id)
            if here and bid in view.specs:
                mine[bid] = here
        wanted = self._followed | set(mine)
        if wanted != self._followed:
            await self._save(wanted)  # durable before anything starts: a crash now still stops them later
        for bid, here in sorted(mine.items()):
            try:
                await self._run(bid, view.specs[bid], here)
            except Exception as e:  # noqa: BLE001 -- the next turn retries; other blocks go on
                if self._failing.get(bid) != str(e):
                    self._failing[bid] = str(e)
                    log.error("cannot run the instances placed here", extra={"block": bid, "error": str(e)})
            else:
                self._failing.pop(bid, None)
        for bid in sorted(self._followed - set(mine)):
            if self.runtime.desired(bid):
                log.info("block no longer placed here; stopping its instances", extra={"block": bid})
            await self.runtime.set_desired(bid, [])
            self.blocks.followed(bid, None)
            self._resolved.pop(bid, None)
            self._failing.pop(bid, None)
        if set(mine) != self._followed:
            await self._save(set(mine))

    async def _run(self, bid: str, spec: BlockSpec, here: list[Instance]) -> None:
        digest = spec_digest(spec)
        cached = self._resolved.get(bid)
        if cached is None or cached[0] != digest:
            res = await self.blocks.resolve_spec(bid, spec)
            await self.blocks.ensure_image(res)
            self._resolved[bid] = (digest, res)
        res = self._resolved[bid][1]
        code = code_for(res, self.runtime.driver_name)
        specs = instance_specs(res, bid, [i.instance_id for i in here], [Placement(i.node_id, i.gpus) for i in here],
                               code, res.to_record())
        have = {s.instance_id: s.digest() for s in self.runtime.desired(bid)}
        if have != {s.instance_id: s.digest() for s in specs}:
            await self.runtime.set_desired(bid, specs)
            log.info("running the instances placed here", extra={"block": bid, "instances": len(specs)})
        self.blocks.followed(bid, res)

    async def _save(self, blocks: set[str]) -> None:
        await asyncio.to_thread(self.store.put, FOLLOWED, _KEY, sorted(blocks))
        self._followed = set(blocks)


__all__ = ["FOLLOWED", "FOLLOW_INTERVAL_S", "PlacementFollower", "spec_digest"]
