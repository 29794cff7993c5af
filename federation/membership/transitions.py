"""The member state rules of the SWIM core (memberlist's aliveNode / suspectNode / deadNode): how an
alive, suspect or dead update changes the table, and how this node refutes an accusation.

`MemberTransitions` is the base of `Swim` (swim.py), which sets the state it reads (declared below);
like Swim it is sans-IO: every method returns the effects to carry out.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from typing import assert_never

from federation.membership.awareness import Awareness
from federation.membership.broadcasts import BroadcastQueue
from federation.membership.config import SwimConfig
from federation.membership.effects import Effect, MemberChanged, SuspicionTimeout, SwimCounters
from federation.membership.messages import (
    MAX_INT,
    PROTOCOL_VERSION,
    Alive,
    Dead,
    Gossip,
    MemberState,
    Suspect,
)
from federation.membership.suspicion import Suspicion
from federation.membership.table import MemberTable, Row
from federation.sansio import NodeId, Send, Wake

log = logging.getLogger("federation.membership.swim")  # the core's log: one logger for SWIM transitions

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
PROBED = (ALIVE, SUSPECT)


class MemberTransitions:
    """See the module docstring."""

    _id: NodeId
    _cfg: SwimConfig
    _rng: random.Random
    _me: Row
    _table: MemberTable
    _suspicions: dict[NodeId, Suspicion]
    _queue: BroadcastQueue
    _awareness: Awareness
    _told: dict[NodeId, int]
    _leaving: bool
    counters: SwimCounters

    # ----- state changes (memberlist aliveNode / suspectNode / deadNode) ------------------------
    def _apply_updates(self, now: float, updates: Iterable[object]) -> list[Effect]:
        effects: list[Effect] = []
        for u in updates:
            if not isinstance(u, (Alive, Suspect, Dead)):
                self.counters.ignored_unknown_type += 1
                continue
            if u.v != PROTOCOL_VERSION:
                self.counters.ignored_bad_version += 1
                continue
            match u:
                case Alive():
                    effects += self._on_alive(now, u)
                case Suspect():
                    effects += self._on_suspect(now, u)
                case Dead():
                    effects += self._on_dead(now, u)
                case _:
                    assert_never(u)
        return effects

    def _on_alive(self, now: float, a: Alive) -> list[Effect]:
        me = self._me
        if a.node == self._id:
            # Someone holds a newer or different picture of us (our previous life): out-bid it.
            if not self._leaving and (
                a.inc > me.inc or (a.inc == me.inc and (a.addr, a.meta) != (me.addr, me.meta))
            ):
                return self._refute(a.inc)
            return []
        m = self._table.get(a.node)
        if m is None:
            if not self._table.add(Row(a.node, a.addr, ALIVE, a.inc, dict(a.meta), now)):
                self.counters.members_dropped += 1
                return []
            self._queue.put(a)
            log.info("member joined", extra={"peer": a.node, "inc": a.inc, "addr": a.addr})
            return [MemberChanged(a.node, ALIVE, a.inc, a.addr)]
        if a.inc <= m.inc:  # SWIM §4.2: only a higher incarnation overrides suspect/dead
            return []
        effects: list[Effect] = []
        if self._suspicions.pop(a.node, None) is not None:
            effects.append(Wake(math.inf, SuspicionTimeout(a.node)))
        if m.state != ALIVE:
            m.changed_at = now
            log.info("member alive", extra={"peer": a.node, "inc": a.inc, "was": m.state.value})
        self._table.forget_failed(a.node)
        m.state, m.inc, m.addr, m.meta = ALIVE, a.inc, a.addr, dict(a.meta)
        self._queue.put(a)
        effects.append(MemberChanged(a.node, ALIVE, a.inc, a.addr))
        return effects

    def _on_suspect(self, now: float, s: Suspect) -> list[Effect]:
        if s.node == self._id:
            return self._accused(s.inc, s.src)
        m = self._table.get(s.node)
        if m is None or s.inc < m.inc:
            return []
        sus = self._suspicions.get(s.node)
        if sus is not None:
            confirmed = sus.confirm(s.src)
            if confirmed is None:
                return []
            self._suspicions[s.node] = confirmed
            self._queue.put(s)  # pass confirmations on, so others shrink their timers too
            return [Wake(confirmed.deadline(), SuspicionTimeout(s.node))]
        if m.state != ALIVE:
            return []
        m.state, m.inc, m.changed_at = SUSPECT, s.inc, now
        sus = Suspicion.begin(now, s.src, self._table.live_count(), self._cfg)
        self._suspicions[s.node] = sus
        self._queue.put(s)
        log.info("member suspected", extra={"peer": s.node, "inc": s.inc, "by": s.src})
        return [MemberChanged(s.node, SUSPECT, s.inc, m.addr), Wake(sus.deadline(), SuspicionTimeout(s.node))]

    def _on_suspicion_timeout(self, now: float, node: NodeId) -> list[Effect]:
        sus = self._suspicions.get(node)
        m = self._table.get(node)
        if sus is None or m is None or m.state != SUSPECT:
            return []
        deadline = sus.deadline()
        if now < deadline:
            return [Wake(deadline, SuspicionTimeout(node))]
        return self._on_dead(now, Dead(node=node, inc=m.inc, src=self._id))

    def _on_dead(self, now: float, d: Dead) -> list[Effect]:
        if d.node == self._id:
            return self._accused(d.inc, d.src)
        m = self._table.get(d.node)
        if m is None or d.inc < m.inc:
            return []
        if m.state in (DEAD, LEFT):
            if m.state == DEAD and d.src == d.node:  # it told someone it left: stop reconnecting
                m.state = LEFT
                self._table.forget_failed(d.node)
                return [MemberChanged(d.node, LEFT, m.inc, m.addr)]
            return []
        effects: list[Effect] = []
        if self._suspicions.pop(d.node, None) is not None:
            effects.append(Wake(math.inf, SuspicionTimeout(d.node)))
        state = LEFT if d.src == d.node else DEAD
        m.state, m.inc, m.changed_at = state, d.inc, now
        if state == DEAD:
            self._table.mark_failed(d.node, m.addr, now)
            self.counters.failed_dropped = self._table.failed_dropped
        self._queue.put(d)
        log.info("member down", extra={"peer": d.node, "inc": d.inc, "state": state.value, "by": d.src})
        effects.append(MemberChanged(d.node, state, d.inc, m.addr))
        return effects

    def _accused(self, inc: int, accuser: NodeId) -> list[Effect]:
        """Someone suspects us or declared us dead: refute if it is news, and tell the accuser directly.

        Telling the accuser (once per incarnation) matters after a stall: its suspicion timer started
        first and runs out first, and gossip alone may reach it a round too late.
        """
        if self._leaving:
            return []
        effects: list[Effect] = []
        if inc >= self._me.inc:
            effects += self._refute(inc)
        if accuser == self._id or self._told.get(accuser) == self._me.inc:
            return effects
        self._note_told(accuser)
        effects.append(Send(accuser, Gossip(updates=(self._alive_msg(),))))
        return effects

    def _note_told(self, node: NodeId) -> None:
        if len(self._told) >= self._cfg.max_members:
            self._told.clear()
        self._told[node] = self._me.inc

    def _refute(self, accused_inc: int) -> list[Effect]:
        """SWIM §4.2: out-bid the accusation with a higher incarnation (Lifeguard: count it against us)."""
        me = self._me
        me.inc = min(max(me.inc, accused_inc) + 1, MAX_INT)
        self.counters.refutations += 1
        self._awareness = self._awareness.apply(1)
        alive = self._alive_msg()
        self._queue.put(alive)
        log.info("refuting suspicion", extra={"inc": me.inc})
        peers = self._table.peers(*PROBED)
        chosen = self._rng.sample(peers, min(self._cfg.refute_fanout, len(peers)))
        for nid in chosen:
            self._note_told(nid)
        return [Send(nid, Gossip(updates=(alive,))) for nid in chosen]

    def _alive_msg(self) -> Alive:
        me = self._me
        return Alive(node=me.node, inc=me.inc, addr=me.addr, meta=dict(me.meta))


__all__ = ["PROBED", "MemberTransitions"]
