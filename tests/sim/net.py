"""Deterministic multi-node simulator: many sans-IO cores, one process, a virtual clock.

The network is seeded: it can drop, delay (and so reorder), duplicate and partition
messages. Cores are driven only through `on_message` / `on_timer`; they hand back
`federation.sansio.Send` / `Wake` effects and any other effect, which goes to `observe`.

Usage:
    net = SimNet(seed=7, loss=0.1, delay_s=(0.001, 0.02))
    for nid in ids: net.add(nid, core_factory(nid))
    net.partition({a}, {b, c}); net.run_for(5.0); net.heal()
    net.run_until(lambda: all_converged(), max_s=30)
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from federation.sansio import NodeId, Send, Wake


class Core(Protocol):
    """What the simulator needs of a protocol core."""

    def start(self, now: float) -> list[Any]: ...

    def on_message(self, now: float, src: NodeId, msg: Any) -> list[Any]: ...

    def on_timer(self, now: float, key: Hashable) -> list[Any]: ...


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)  # "msg" | "timer"
    node: NodeId = field(compare=False)
    payload: Any = field(compare=False)
    epoch: int = field(compare=False)  # node incarnation the event belongs to


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_sent: int = 0


class SimNet:
    """A seeded in-memory network of cores with a virtual clock."""

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        dup: float = 0.0,
        delay_s: tuple[float, float] = (0.0005, 0.005),
        sizeof: Callable[[Any], int] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.loss = loss
        self.dup = dup
        self.delay_s = delay_s
        self.sizeof = sizeof
        self.stats = NetStats()
        self.cores: dict[NodeId, Core] = {}
        self.observed: list[tuple[float, NodeId, Any]] = []
        self.observers: list[Callable[[float, NodeId, Any], None]] = []
        self.on_send: list[Callable[[float, NodeId, NodeId, Any], None]] = []
        self._queue: list[_Event] = []
        self._seq = itertools.count()
        self._timers: dict[tuple[NodeId, Hashable], float] = {}
        self._epoch: dict[NodeId, int] = {}
        self._down: set[NodeId] = set()
        self._stalled_until: dict[NodeId, float] = {}
        self._groups: list[set[NodeId]] | None = None
        self._blocked_pairs: set[tuple[NodeId, NodeId]] = set()

    # ----- topology -------------------------------------------------------------------
    def add(self, nid: NodeId, core: Core) -> None:
        self.cores[nid] = core
        self._epoch[nid] = self._epoch.get(nid, 0) + 1
        self._down.discard(nid)
        self._apply(nid, core.start(self.now))

    def crash(self, nid: NodeId) -> None:
        """Stop a node: its timers and in-flight messages to it vanish."""
        self._down.add(nid)
        self._epoch[nid] = self._epoch.get(nid, 0) + 1
        for key in [k for k in self._timers if k[0] == nid]:
            del self._timers[key]

    def restart(self, nid: NodeId, core: Core) -> None:
        self.add(nid, core)

    def stall(self, nid: NodeId, duration_s: float) -> None:
        """Freeze a node (a stalled event loop): events queue up and run when it wakes."""
        self._stalled_until[nid] = self.now + duration_s

    def is_up(self, nid: NodeId) -> bool:
        return nid in self.cores and nid not in self._down

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Only nodes in the same group can talk; nodes in no group talk to nobody."""
        self._groups = [set(g) for g in groups]

    def block(self, a: NodeId, b: NodeId) -> None:
        """Drop traffic both ways between a and b."""
        self._blocked_pairs.add((a, b))
        self._blocked_pairs.add((b, a))

    def heal(self) -> None:
        self._groups = None
        self._blocked_pairs.clear()

    def can_talk(self, a: NodeId, b: NodeId) -> bool:
        if (a, b) in self._blocked_pairs:
            return False
        if self._groups is None:
            return True
        return any(a in g and b in g for g in self._groups)

    # ----- running --------------------------------------------------------------------
    def run_for(self, duration_s: float) -> None:
        self.run_until(lambda: False, max_s=duration_s, raise_on_timeout=False)

    def run_until(
        self, pred: Callable[[], bool], *, max_s: float, raise_on_timeout: bool = True
    ) -> float:
        """Advance virtual time until `pred()` holds; return the virtual time it took."""
        start = self.now
        deadline = self.now + max_s
        while not pred():
            if not self._queue or self._queue[0].at > deadline:
                self.now = deadline
                if raise_on_timeout:
                    raise TimeoutError(f"condition not met within {max_s} virtual seconds")
                return self.now - start
            self._step()
        return self.now - start

    def _step(self) -> None:
        ev = heapq.heappop(self._queue)
        self.now = max(self.now, ev.at)
        nid = ev.node
        if nid in self._down or ev.epoch != self._epoch.get(nid):
            return
        stalled = self._stalled_until.get(nid, 0.0)
        if stalled > self.now:
            if ev.kind == "timer" and self._timers.get((nid, ev.payload)) == ev.at:
                self._timers[(nid, ev.payload)] = stalled  # the timer fires late, not never
            ev.at = stalled
            ev.seq = next(self._seq)
            heapq.heappush(self._queue, ev)
            return
        core = self.cores[nid]
        if ev.kind == "timer":
            key = ev.payload
            if self._timers.get((nid, key)) != ev.at:
                return  # replaced or cancelled
            del self._timers[(nid, key)]
            effects = core.on_timer(self.now, key)
        else:
            src, msg = ev.payload
            self.stats.delivered += 1
            effects = core.on_message(self.now, src, msg)
        self._apply(nid, effects)

    def apply(self, nid: NodeId, effects: list[Any]) -> None:
        """Carry out effects a core returned from a command (e.g. `leave()`, `write()`)."""
        self._apply(nid, effects)

    def _apply(self, nid: NodeId, effects: list[Any]) -> None:
        for eff in effects:
            if isinstance(eff, Send):
                self._send(nid, eff.to, eff.msg)
            elif isinstance(eff, Wake):
                self._set_timer(nid, eff.key, eff.at)
            else:
                self.observed.append((self.now, nid, eff))
                for obs in self.observers:
                    obs(self.now, nid, eff)

    def _set_timer(self, nid: NodeId, key: Hashable, at: float) -> None:
        if math.isinf(at):
            self._timers.pop((nid, key), None)
            return
        at = max(at, self.now)
        self._timers[(nid, key)] = at
        heapq.heappush(self._queue, _Event(at, next(self._seq), "timer", nid, key, self._epoch[nid]))

    def _send(self, src: NodeId, dst: NodeId, msg: Any) -> None:
        self.stats.sent += 1
        for hook in self.on_send:
            hook(self.now, src, dst, msg)
        if self.sizeof is not None:
            self.stats.bytes_sent += self.sizeof(msg)
        if dst not in self.cores or not self.can_talk(src, dst) or self.rng.random() < self.loss:
            self.stats.dropped += 1
            return
        copies = 2 if self.rng.random() < self.dup else 1
        self.stats.duplicated += copies - 1
        lo, hi = self.delay_s
        for _ in range(copies):
            at = self.now + self.rng.uniform(lo, hi)
            heapq.heappush(
                self._queue, _Event(at, next(self._seq), "msg", dst, (src, msg), self._epoch.get(dst, 0))
            )
