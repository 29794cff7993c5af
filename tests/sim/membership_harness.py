"""Drive N `Swim` cores in `SimNet`: address = node id, optional msgpack round trip, verdict log.

Used by tests/sim/test_membership_sim.py and bench/sim_membership.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from federation.membership import (
    MemberChanged,
    MemberState,
    SendAddr,
    Swim,
    SwimConfig,
    SwimMsg,
    decode,
    encode,
)
from federation.sansio import NodeId, Send
from tests.sim.net import SimNet


def _encoded_size(msg: SwimMsg) -> int:
    return len(encode(msg))


class SwimSimNode:
    """Adapts `Swim` to SimNet's Core: SendAddr -> Send (addr == id), bytes on the wire if `codec`."""

    def __init__(self, swim: Swim, seeds: list[str], *, codec: bool) -> None:
        self.swim = swim
        self.seeds = seeds
        self.codec = codec

    def start(self, now: float) -> list[Any]:
        return self._out(self.swim.start(now) + self.swim.join(now, self.seeds))

    def on_message(self, now: float, src: NodeId, msg: Any) -> list[Any]:
        decoded: SwimMsg = decode(msg) if self.codec else msg
        return self._out(self.swim.on_message(now, src, decoded))

    def on_timer(self, now: float, key: Hashable) -> list[Any]:
        return self._out(self.swim.on_timer(now, key))

    def _out(self, effects: list[Any]) -> list[Any]:
        out: list[Any] = []
        for e in effects:
            if isinstance(e, SendAddr):
                e = Send(NodeId(e.addr), e.msg)
            if self.codec and isinstance(e, Send):
                e = Send(e.to, encode(e.msg))
            out.append(e)
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    at: float
    observer: NodeId
    node: NodeId
    state: MemberState
    inc: int


@dataclass
class SwimCluster:
    """N nodes that all know each other's ids as seeds; records every MemberChanged."""

    n: int
    seed: int
    cfg: SwimConfig = field(default_factory=SwimConfig.lan)
    loss: float = 0.0
    dup: float = 0.0
    delay_s: tuple[float, float] = (0.0005, 0.005)
    codec: bool = False
    measure_bytes: bool = False
    seeds_per_node: int = 2

    def __post_init__(self) -> None:
        sizeof: Callable[[Any], int] | None = None
        if self.codec:
            sizeof = len
        elif self.measure_bytes:
            sizeof = _encoded_size
        self.net = SimNet(seed=self.seed, loss=self.loss, dup=self.dup, delay_s=self.delay_s, sizeof=sizeof)
        self.rng = random.Random(self.seed ^ 0x5EED)
        self.ids = [NodeId(f"n{i:03d}") for i in range(self.n)]
        self.nodes: dict[NodeId, SwimSimNode] = {}
        self.verdicts: list[Verdict] = []
        self.lives: dict[NodeId, int] = {}
        # Each observer's view, kept from MemberChanged effects (cheap to check after every event).
        self.view: dict[NodeId, dict[NodeId, MemberState]] = {}
        self.version = 0
        self._memo: tuple[int, float, bool] = (-1, -1.0, False)
        self.net.observers.append(self._observe)

    def _observe(self, now: float, observer: NodeId, eff: Any) -> None:
        if isinstance(eff, MemberChanged):
            self.verdicts.append(Verdict(now, observer, eff.node, eff.state, eff.incarnation))
            self.view.setdefault(observer, {})[eff.node] = eff.state
            self.version += 1

    def _seeds_for(self, nid: NodeId) -> list[str]:
        others = [str(o) for o in self.ids if o != nid]
        return self.rng.sample(others, min(self.seeds_per_node, len(others)))

    def start_node(self, nid: NodeId) -> None:
        life = self.lives.get(nid, -1) + 1
        self.lives[nid] = life
        # A restart starts above anything the old life could have reached (the daemon uses a
        # persisted counter or wall-clock seconds; here, the life number in the high digits).
        swim = Swim(
            nid, str(nid), self.cfg, random.Random(self.rng.getrandbits(64)), incarnation=life * 10**6
        )
        node = SwimSimNode(swim, self._seeds_for(nid), codec=self.codec)
        self.nodes[nid] = node
        self.view[nid] = {}
        self.version += 1
        self.net.add(nid, node)

    def start(self) -> None:
        for nid in self.ids:
            self.start_node(nid)

    # ----- views --------------------------------------------------------------------------
    def live(self) -> list[NodeId]:
        return [nid for nid in self.ids if self.net.is_up(nid)]

    def leave(self, nid: NodeId) -> None:
        """Graceful leave of `nid` (a command, so its effects are injected into the net)."""
        node = self.nodes[nid]
        self.net._apply(nid, node._out(node.swim.leave(self.net.now)))  # SimNet has no public inject

    def crash(self, nid: NodeId) -> None:
        self.net.crash(nid)
        self.version += 1

    def state_of(self, observer: NodeId, node: NodeId) -> MemberState | None:
        return self.view[observer].get(node)

    def all_see(self, nodes: list[NodeId], state: MemberState, observers: list[NodeId] | None = None) -> bool:
        obs = self.live() if observers is None else observers
        return all(self.state_of(o, x) == state for o in obs for x in nodes if o != x)

    def converged(self) -> bool:
        """Every live node sees exactly the other live nodes as alive.

        Re-checked only after a view changed, and a "no" at most every 10 virtual ms (O(N^2) per
        check); a stale "yes" is never returned.
        """
        version, at, result = self._memo
        if version == self.version or (not result and self.net.now - at < 0.01):
            return result
        result = self.converged_now()
        self._memo = (self.version, self.net.now, result)
        return result

    def converged_now(self) -> bool:
        """Exact (unthrottled) convergence check."""
        live = set(self.live())
        for o in live:
            alive = {n for n, st in self.view[o].items() if st == MemberState.ALIVE}
            alive.add(o)
            if alive != live:
                return False
        # The views come from effects; confirm against the cores' own tables once they agree.
        for o in live:
            alive = {m.node for m in self.nodes[o].swim.members() if m.state == MemberState.ALIVE}
            if alive != live:
                return False
        return True

    def time_all_saw(self, node: NodeId, state: MemberState, since: float, observers: list[NodeId]) -> float:
        """Virtual time by which every observer's latest verdict on `node` since `since` was `state`."""
        last: dict[NodeId, Verdict] = {}
        for v in self.verdicts:
            if v.node == node and v.at >= since and v.observer in observers:
                last[v.observer] = v
        if set(last) != set(observers) or any(v.state != state for v in last.values()):
            return float("inf")
        return max(v.at for v in last.values()) - since

    def declared_dead(self, node: NodeId, since: float = 0.0) -> list[Verdict]:
        return [v for v in self.verdicts if v.node == node and v.state == MemberState.DEAD and v.at >= since]
