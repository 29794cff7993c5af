"""The asyncio driver of the replication core: timers, sends, peers and change callbacks.

It only carries out the `Replicator`'s effects. Every core call touches LMDB, so it runs in a
worker thread (`asyncio.to_thread`) under one lock: the core sees one call at a time.
Sending is injected (`send(node_id, message)`), so the same driver runs over the p2p transport
in the daemon and over anything else in tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Self, TypeVar

from federation.broken_build import ACK_BEFORE_DURABLE, ACK_EARLY_DELAY_S, broken
from federation.errors import FederationError
from federation.replication.gossip import Changed, Effect, Replicator, TimerKey
from federation.replication.record import Record
from federation.replication.wire import Push, ReplMessage
from federation.sansio import NodeId, Send, Wake

log = logging.getLogger(__name__)
T = TypeVar("T")

SendFn = Callable[[NodeId, ReplMessage], Awaitable[None]]
# Sends in flight at once; past it a send is dropped (counted): gossip and anti-entropy repair.
MAX_INFLIGHT_SENDS = 256


class ReplicationDriver:
    """Runs one `Replicator` on the loop (async context manager)."""

    def __init__(self, core: Replicator, send: SendFn) -> None:
        self.core = core
        self._send = send
        self._lock = asyncio.Lock()
        self._timers: dict[object, asyncio.TimerHandle] = {}
        # A gossip round with nothing queued sends nothing: its timer is parked here (when it was
        # due) instead of costing a task and a thread hop 5 times a second on an idle node, and
        # `_apply` arms it again after the first call that queues a delta.
        self._gossip_parked: float | None = None
        self._subs: list[Callable[[Changed], None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._closing = False
        self.send_failures = 0
        self.sends_dropped = 0
        # Test-only broken build (AIOSD_TEST_BREAK=ack-before-durable): 0.0 in every real daemon.
        self._ack_early_s = ACK_EARLY_DELAY_S if broken(ACK_BEFORE_DURABLE) else 0.0

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        await self._call(self.core.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True  # a timer turn still running may arm timers: they do nothing now
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        for t in list(self._sends):
            t.cancel()
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)
        self._tg = None
        for h in self._timers.values():  # armed by a turn that ended during the exit
            h.cancel()
        self._timers.clear()

    def subscribe(self, callback: Callable[[Changed], None]) -> None:
        """Call `callback(Changed)` on the loop for every stored change (local or merged)."""
        self._subs.append(callback)

    async def set_peers(self, alive: Iterable[NodeId]) -> None:
        ids = list(alive)
        await self._call(lambda now: self.core.set_peers(now, ids))

    async def deliver(self, src: NodeId, msg: ReplMessage) -> None:
        await self._call(lambda now: self.core.on_message(now, src, msg))

    async def write_many(self, items: Sequence[tuple[str, str, bytes | None]]) -> list[Record]:
        """Store and queue a batch (raises the core's InvalidWrite / WriteRefused)."""
        out: list[Record] = []

        def step(now: float) -> list[Effect]:
            effects, records = self.core.write_many(now, items)
            out.extend(records)
            return effects

        if self._ack_early_s:
            return await self._write_acked_early(step, out)
        await self._call(step)
        return out

    async def _write_acked_early(self, step: Callable[[float], list[Effect]], out: list[Record]) -> list[Record]:
        """The broken build: acknowledge now, store (and gossip, see `_send_one`) only later."""
        real, held = self.core.store, _HeldStore(self.core.store)
        async with self._lock:
            self.core.store = held  # type: ignore[assignment]  # test-only proxy of the same interface
            try:
                effects = await asyncio.to_thread(step, time.monotonic())
            finally:
                self.core.store = real
        self._apply(effects)
        asyncio.get_running_loop().call_later(self._ack_early_s, self._spawn_late_store, list(held.held))
        return out

    def _spawn_late_store(self, records: list[Record]) -> None:
        if self._tg is not None and records:
            self._tg.create_task(self.run(lambda: self.core.store.put_many(records)))

    async def kick_anti_entropy(self) -> None:
        """Run an anti-entropy round now (e.g. after learning a peer's key)."""
        await self._call(lambda now: self.core.on_timer(now, TimerKey.ANTI_ENTROPY))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` (which may read the core's store) in a worker thread, alone with the core."""
        async with self._lock:
            return await asyncio.to_thread(fn)

    async def _call(self, fn: Callable[[float], list[Effect]]) -> None:
        async with self._lock:
            effects = await asyncio.to_thread(fn, time.monotonic())
        self._apply(effects)

    def _apply(self, effects: list[Effect]) -> None:
        loop = asyncio.get_running_loop()
        for e in effects:
            match e:
                case Send():
                    self._spawn_send(e.to, e.msg)
                case Wake():
                    old = self._timers.pop(e.key, None)
                    if old is not None:
                        old.cancel()
                    if e.key == TimerKey.GOSSIP and not self.core.queued:
                        self._gossip_parked = e.at
                        continue
                    delay = max(0.0, e.at - time.monotonic())
                    self._timers[e.key] = loop.call_later(delay, self._on_wake, e.key)
                case Changed():
                    for cb in list(self._subs):
                        try:
                            cb(e)
                        except Exception:
                            log.exception("replication subscriber failed", extra={"table": e.table})
        # Runs right after the core call, before another can start: `queued` is current.
        if self._gossip_parked is not None and self.core.queued:
            at, self._gossip_parked = self._gossip_parked, None
            delay = max(0.0, at - time.monotonic())  # overdue: at once
            self._timers[TimerKey.GOSSIP] = loop.call_later(delay, self._on_wake, TimerKey.GOSSIP)

    def _on_wake(self, key: object) -> None:
        self._timers.pop(key, None)
        if self._tg is not None and not self._closing:
            self._tg.create_task(self._timer(key))

    async def _timer(self, key: object) -> None:
        try:
            await self._call(lambda now: self.core.on_timer(now, key))
        except Exception:  # one timer turn is a unit of work; the core re-arms on the next call
            log.exception("replication timer failed", extra={"timer": str(key)})
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(1.0, self._on_wake, key)

    def _spawn_send(self, to: NodeId, msg: ReplMessage) -> None:
        if self._tg is None or len(self._sends) >= MAX_INFLIGHT_SENDS:
            self.sends_dropped += 1
            return
        t = self._tg.create_task(self._send_one(to, msg))
        self._sends.add(t)
        t.add_done_callback(self._sends.discard)

    async def _send_one(self, to: NodeId, msg: ReplMessage) -> None:
        try:
            if self._ack_early_s and isinstance(msg, Push):
                await asyncio.sleep(self._ack_early_s)  # the broken build gossips late too
            await self._send(to, msg)
        except asyncio.CancelledError:
            raise
        except (FederationError, OSError) as e:  # the peer may be gone: gossip and anti-entropy repair
            self.send_failures += 1
            log.debug("replication send failed", extra={"peer": to, "error": type(e).__name__})


class _HeldStore:
    """Test-only (broken build): reads go to the real store, writes are held back."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.held: list[Record] = []

    def put_many(self, puts: Sequence[Record], deletes: Sequence[tuple[str, str]] = ()) -> None:
        self.held.extend(puts)

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


__all__ = ["MAX_INFLIGHT_SENDS", "ReplicationDriver", "SendFn"]
