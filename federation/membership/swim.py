"""The SWIM + Lifeguard membership core: a sans-IO state machine (no clock, no sockets, no global RNG).

Inputs: messages (already decoded and authenticated by the driver), timer wake-ups, `now`.
Outputs: `Send`/`SendAddr` (to a node id / to an address), `Wake` (timers), `MemberChanged`.
Not here: the alive/suspect/dead rules and refutation (transitions.py, the base class), encoding
(messages.py), formulas (suspicion.py), transport and envelopes (the driver).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Hashable, Iterable
from typing import assert_never

from federation.membership.awareness import Awareness
from federation.membership.broadcasts import BroadcastQueue
from federation.membership.config import SwimConfig
from federation.membership.effects import (
    Effect,
    GossipTick,
    JoinTick,
    Member,
    ProbeTick,
    ProbeTimeout,
    ReconnectTick,
    RelayTimeout,
    SendAddr,
    SuspicionTimeout,
    SwimCounters,
    SyncTick,
)
from federation.membership.messages import (
    MAX_ADDR_CHARS,
    MAX_INT,
    PROTOCOL_VERSION,
    SWIM_TYPES,
    Ack,
    Alive,
    Dead,
    Gossip,
    MemberRecord,
    MemberState,
    Nack,
    Ping,
    PingReq,
    Suspect,
    SwimMsg,
    Sync,
    SyncReply,
    check_identity,
)
from federation.membership.probes import ProbeState, Relay
from federation.membership.suspicion import Suspicion, push_pull_interval_s, retransmit_limit
from federation.membership.table import MemberTable, Row
from federation.membership.transitions import PROBED, MemberTransitions
from federation.sansio import NodeId, Send, Wake

log = logging.getLogger(__name__)

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
_PROBED = PROBED
MAX_SEEDS = 64  # a seed list is typed by a human or carried in a token; more is a mistake
# A relay answers with a nack a bit before the prober's own deadline (it started probe_timeout later).
_RELAY_NACK_FRACTION = 0.8

UpdateMsg = Alive | Suspect | Dead


class Swim(MemberTransitions):
    """One node's view of the cluster. Every method returns the effects to carry out.

    The driver must resolve `Send.to` to an address via `addr_of()` (or the address the last message
    from that node came from), call `on_timer` for each `Wake`, and feed only messages whose sender
    it authenticated: `src` is trusted.
    """

    def __init__(
        self,
        self_id: NodeId,
        addr: str,
        config: SwimConfig,
        rng: random.Random,
        meta: dict[str, str] | None = None,
        incarnation: int = 0,
    ) -> None:
        meta = check_identity(self_id, addr, incarnation, meta)  # ValueError naming the field
        self._id = self_id
        self._cfg = config
        self._rng = rng
        self._me = Row(self_id, addr, ALIVE, incarnation, meta, 0.0)
        self._table = MemberTable(self._me, config, rng)
        self._probe: ProbeState | None = None
        self._relays: dict[int, Relay] = {}
        self._suspicions: dict[NodeId, Suspicion] = {}
        self._queue = BroadcastQueue(config.max_broadcasts)
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._told: dict[NodeId, int] = {}  # accuser -> our incarnation we sent it (bounded)
        self._seeds: list[str] = []
        self._join_backoff_s = config.join_retry_s
        self._joined = False  # a push-pull answer arrived since join(): someone knows us now
        self._seq = 0
        self._leaving = False
        self.counters = SwimCounters()

    # ----- read side -------------------------------------------------------------------------
    @property
    def self_id(self) -> NodeId:
        return self._id

    @property
    def incarnation(self) -> int:
        return self._me.inc

    @property
    def health_score(self) -> int:
        """Lifeguard local health score (0 = healthy)."""
        return self._awareness.score

    @property
    def pending_broadcasts(self) -> int:
        return len(self._queue)

    @property
    def broadcasts_dropped(self) -> int:
        return self._queue.dropped

    def members(self) -> list[Member]:
        """Snapshot of every member we know, ourselves included, sorted by node id."""
        return self._table.snapshot()

    def member(self, node: NodeId) -> Member | None:
        row = self._table.get(node)
        return None if row is None else row.snapshot()

    def addr_of(self, node: NodeId) -> str | None:
        row = self._table.get(node)
        return None if row is None else row.addr

    # ----- commands --------------------------------------------------------------------------
    def start(self, now: float) -> list[Effect]:
        """Arm the periodic timers (staggered so a fleet started together does not beat in step)."""
        cfg, rng = self._cfg, self._rng
        self._me.changed_at = now
        self._queue.put(self._alive_msg())
        return [
            Wake(now + rng.uniform(0, cfg.probe_interval_s), ProbeTick()),
            Wake(now + rng.uniform(0, cfg.gossip_interval_s), GossipTick()),
            Wake(now + rng.uniform(0.5, 1.0) * cfg.push_pull_interval_s, SyncTick()),
            Wake(now + rng.uniform(0.5, 1.0) * cfg.reconnect_interval_s, ReconnectTick()),
        ]

    def join(self, now: float, seeds: list[str]) -> list[Effect]:
        """Push-pull with each seed address; retried with back-off while we know no live member.

        Raises:
            ValueError: a seed is not a non-empty address, or there are too many.
        """
        if len(seeds) > MAX_SEEDS:
            raise ValueError(f"seeds: at most {MAX_SEEDS}, got {len(seeds)}")
        for i, s in enumerate(seeds):
            if not isinstance(s, str) or not 1 <= len(s) <= MAX_ADDR_CHARS:
                raise ValueError(f"seeds[{i}]: must be an address of 1..{MAX_ADDR_CHARS} chars")
        self._seeds = list(dict.fromkeys(s for s in seeds if s != self._me.addr))
        self._join_backoff_s = self._cfg.join_retry_s
        self._joined = False
        if not self._seeds or self._leaving:
            return []
        sync = Sync(join=True, states=self._table.records())
        effects: list[Effect] = [SendAddr(s, sync) for s in self._seeds]
        effects.append(Wake(now + self._join_backoff_s, JoinTick()))
        log.info("membership join", extra={"seeds": len(self._seeds)})
        return effects

    def set_meta(self, now: float, meta: dict[str, str]) -> list[Effect]:
        """Publish new metadata (roles, ports): bump our incarnation and gossip it (memberlist UpdateNode).

        Raises:
            ValueError: `meta` exceeds the wire limits (the field is named).
        """
        me = self._me
        me.meta = check_identity(self._id, me.addr, me.inc, meta)
        if self._leaving:
            return []
        me.inc = min(me.inc + 1, MAX_INT)
        self._queue.put(self._alive_msg())
        return self._gossip_round(now)

    def leave(self, now: float) -> list[Effect]:
        """Graceful leave: mark ourselves left and tell a few members now; gossip keeps spreading it.

        The driver should keep delivering timers until `pending_broadcasts` is 0 or a grace period
        passes. Probing, push-pull and refutation stop.
        """
        if self._leaving:
            return []
        self._leaving = True
        self._me.state = LEFT
        self._me.changed_at = now
        self._queue.put(Dead(node=self._id, inc=self._me.inc, src=self._id))
        effects: list[Effect] = [
            Wake(math.inf, ProbeTick()),
            Wake(math.inf, SyncTick()),
            Wake(math.inf, ReconnectTick()),
            Wake(math.inf, JoinTick()),
        ]
        effects += self._gossip_round(now)
        log.info("membership leave", extra={"inc": self._me.inc})
        return effects

    # ----- inputs ----------------------------------------------------------------------------
    def on_message(self, now: float, src: NodeId, msg: SwimMsg) -> list[Effect]:
        """Handle one message from authenticated node `src`. Never raises on peer input."""
        self.counters.messages_in += 1
        if not isinstance(msg, SWIM_TYPES):
            self.counters.ignored_unknown_type += 1
            return []
        if msg.v != PROTOCOL_VERSION:
            self.counters.ignored_bad_version += 1
            return []
        if src == self._id:
            self.counters.ignored_from_self += 1
            return []
        match msg:
            case Ping():
                return self._on_ping(now, src, msg)
            case Ack():
                return self._on_ack(now, msg)
            case Nack():
                return self._on_nack(msg)
            case PingReq():
                return self._on_ping_req(now, src, msg)
            case Gossip():
                return self._apply_updates(now, msg.updates)
            case Sync():
                effects = self._merge(now, src, msg.states)
                effects.append(Send(src, SyncReply(states=self._table.records())))
                return effects
            case SyncReply():
                self._joined = True
                return self._merge(now, src, msg.states)
            case _:
                assert_never(msg)

    def on_timer(self, now: float, key: Hashable) -> list[Effect]:
        """Handle a `Wake` we asked for earlier (stale ones are recognised and ignored)."""
        match key:
            case ProbeTick():
                return self._on_probe_tick(now)
            case ProbeTimeout(seq=seq):
                return self._on_probe_timeout(now, seq)
            case GossipTick():
                effects = self._gossip_round(now)
                effects.append(Wake(now + self._cfg.gossip_interval_s, GossipTick()))
                return effects
            case SyncTick():
                return self._on_sync_tick(now)
            case ReconnectTick():
                return self._on_reconnect_tick(now)
            case JoinTick():
                return self._on_join_tick(now)
            case SuspicionTimeout(node=node):
                return self._on_suspicion_timeout(now, node)
            case RelayTimeout(seq=seq):
                relay = self._relays.pop(seq, None)
                return [] if relay is None else [Send(relay.requester, Nack(seq=relay.seq))]
            case _:
                self.counters.ignored_unknown_timer += 1
                return []

    # ----- probing (SWIM §3.1, Lifeguard §3) ---------------------------------------------------
    def _on_probe_tick(self, now: float) -> list[Effect]:
        if self._leaving:
            return []
        effects: list[Effect] = []
        probe, self._probe = self._probe, None
        if probe is not None:
            effects += self._finish_probe(now, probe)
        cfg = self._cfg
        target = self._table.next_target(now)
        if target is not None:
            self._seq += 1
            self._probe = ProbeState(self._seq, target.node, target.inc)
            self.counters.probes += 1
            # A suspect hears the accusation straight from us, so it can refute at once (memberlist).
            extra: list[UpdateMsg] = []
            if target.state == SUSPECT:
                extra.append(Suspect(node=target.node, inc=target.inc, src=self._id))
            ping = Ping(seq=self._seq, target=target.node, gossip=self._piggyback(extra))
            effects.append(Send(target.node, ping))
            effects.append(Wake(now + self._awareness.scale(cfg.probe_timeout_s), ProbeTimeout(self._seq)))
        effects.append(Wake(now + self._awareness.scale(cfg.probe_interval_s), ProbeTick()))
        return effects

    def _finish_probe(self, now: float, probe: ProbeState) -> list[Effect]:
        self._awareness = self._awareness.apply(probe.awareness_delta())
        if probe.acked:
            return []
        self.counters.probes_failed += 1
        m = self._table.get(probe.target)
        if m is None or m.state not in _PROBED:
            return []
        log.debug("probe failed", extra={"peer": probe.target, "inc": probe.inc})
        return self._on_suspect(now, Suspect(node=probe.target, inc=probe.inc, src=self._id))

    def _on_probe_timeout(self, now: float, seq: int) -> list[Effect]:
        probe = self._probe
        if probe is None or probe.seq != seq or probe.acked or self._leaving:
            return []
        target = self._table.get(probe.target)
        if target is None:
            return []
        peers = self._table.peers(ALIVE, exclude=target.node)
        chosen = self._rng.sample(peers, min(self._cfg.indirect_checks, len(peers)))
        probe.expected_nacks = len(chosen)
        return [
            Send(
                p,
                PingReq(seq=seq, target=target.node, target_addr=target.addr, gossip=self._piggyback()),
            )
            for p in chosen
        ]

    def _on_ping(self, now: float, src: NodeId, msg: Ping) -> list[Effect]:
        if msg.target != self._id:
            self.counters.ignored_wrong_target += 1
            return []
        effects = self._apply_updates(now, msg.gossip)
        effects.append(Send(src, Ack(seq=msg.seq, gossip=self._piggyback())))
        return effects

    def _on_ack(self, now: float, msg: Ack) -> list[Effect]:
        effects = self._apply_updates(now, msg.gossip)
        probe = self._probe
        if probe is not None and probe.seq == msg.seq:
            probe.acked = True
            return effects
        relay = self._relays.pop(msg.seq, None)
        if relay is None:
            self.counters.ignored_unexpected_ack += 1
            return effects
        effects.append(Send(relay.requester, Ack(seq=relay.seq, gossip=self._piggyback())))
        effects.append(Wake(math.inf, RelayTimeout(msg.seq)))
        return effects

    def _on_nack(self, msg: Nack) -> list[Effect]:
        probe = self._probe
        if probe is not None and probe.seq == msg.seq and probe.nacks < probe.expected_nacks:
            probe.nacks += 1
        else:
            self.counters.ignored_unexpected_ack += 1
        return []

    def _on_ping_req(self, now: float, src: NodeId, msg: PingReq) -> list[Effect]:
        effects = self._apply_updates(now, msg.gossip)
        if msg.target == self._id:  # odd but harmless: we are the target, so we are alive
            effects.append(Send(src, Ack(seq=msg.seq, gossip=self._piggyback())))
            return effects
        if len(self._relays) >= self._cfg.max_relays:
            self.counters.relays_dropped += 1
            return effects
        self._seq += 1
        self._relays[self._seq] = Relay(src, msg.seq)
        ping = Ping(seq=self._seq, target=msg.target, gossip=self._piggyback())
        effects.append(
            Send(msg.target, ping) if msg.target in self._table else SendAddr(msg.target_addr, ping)
        )
        nack_at = now + self._cfg.probe_timeout_s * _RELAY_NACK_FRACTION
        effects.append(Wake(nack_at, RelayTimeout(self._seq)))
        return effects

    # ----- dissemination (SWIM §4.1) -----------------------------------------------------------
    def _piggyback(self, extra: list[UpdateMsg] | None = None) -> tuple[UpdateMsg, ...]:
        extra = extra or []
        limit = retransmit_limit(len(self._table), self._cfg.retransmit_mult)
        return tuple(extra + self._queue.take(self._cfg.max_piggyback - len(extra), limit))

    def _gossip_round(self, now: float) -> list[Effect]:
        if not len(self._queue):
            return []
        to_dead = self._cfg.gossip_to_dead_s
        cands = [
            m.node
            for m in self._table
            if m.node != self._id
            and (m.state in _PROBED or (m.state == DEAD and now - m.changed_at < to_dead))
        ]
        effects: list[Effect] = []
        limit = retransmit_limit(len(self._table), self._cfg.retransmit_mult)
        for nid in self._rng.sample(cands, min(self._cfg.gossip_nodes, len(cands))):
            updates = self._queue.take(self._cfg.max_piggyback, limit)
            if not updates:
                break
            effects.append(Send(nid, Gossip(updates=tuple(updates))))
        return effects

    # ----- push-pull, join, reconnect -----------------------------------------------------------
    def _merge(self, now: float, src: NodeId, states: Iterable[MemberRecord]) -> list[Effect]:
        effects: list[Effect] = []
        for r in states:
            match r.state:
                case "alive":
                    a = Alive.model_construct(node=r.node, inc=r.inc, addr=r.addr, meta=dict(r.meta))
                    effects += self._on_alive(now, a)
                case "left":
                    effects += self._on_dead(now, Dead.model_construct(node=r.node, inc=r.inc, src=r.node))
                case "suspect" | "dead":
                    # A remote "dead" only makes us suspect: we give the node a chance to refute.
                    effects += self._on_suspect(now, Suspect.model_construct(node=r.node, inc=r.inc, src=src))
        return effects

    def _on_sync_tick(self, now: float) -> list[Effect]:
        if self._leaving:
            return []
        effects: list[Effect] = [
            Wake(now + push_pull_interval_s(self._table.live_count(), self._cfg), SyncTick())
        ]
        peers = self._table.peers(ALIVE)
        if peers:
            effects.append(Send(self._rng.choice(peers), Sync(states=self._table.records())))
        elif self._seeds:  # alone: go back to the seeds (a cold start or a lost cluster recovers)
            effects.append(
                SendAddr(self._rng.choice(self._seeds), Sync(join=True, states=self._table.records()))
            )
        return effects

    def _on_reconnect_tick(self, now: float) -> list[Effect]:
        if self._leaving:
            return []
        cfg = self._cfg
        effects: list[Effect] = [Wake(now + cfg.reconnect_interval_s, ReconnectTick())]
        addr = self._table.failed_addr_to_retry(now)
        if addr is not None:
            effects.append(SendAddr(addr, Sync(states=self._table.records())))
        return effects

    def _on_join_tick(self, now: float) -> list[Effect]:
        if self._leaving or not self._seeds:
            return []
        # Being contacted is not enough: two nodes whose seeds were down would form an island.
        if self._joined:
            self._join_backoff_s = self._cfg.join_retry_s
            return []
        self._join_backoff_s = min(self._join_backoff_s * 2, self._cfg.push_pull_interval_s)
        sync = Sync(join=True, states=self._table.records())
        effects: list[Effect] = [SendAddr(s, sync) for s in self._seeds]
        effects.append(Wake(now + self._join_backoff_s, JoinTick()))
        return effects


__all__ = ["Swim"]
