"""The asyncio driver of the SWIM core (outside the sans-IO membership package, which must not import asyncio).

It only carries out `Swim`'s effects: one-way `swim.*` envelopes (per-peer outboxes, so a dead
peer never delays a probe to a live one), `Wake` as loop timers, `MemberChanged` to subscribers.
Protocol decisions stay in swim.py; trust stays in the envelope verifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Self

from federation.envelope import Verified
from federation.errors import FederationError
from federation.membership.effects import Effect, GossipTick, MemberChanged, SendAddr
from federation.membership.messages import (
    SWIM_KINDS,
    SWIM_TYPES,
    Ack,
    Alive,
    Dead,
    Gossip,
    Ping,
    PingReq,
    SwimMsg,
    Sync,
    SyncReply,
)
from federation.membership.swim import Swim
from federation.sansio import NodeId, Send, Wake
from federation.transport import Transport

log = logging.getLogger(__name__)

# Per-peer outbox: a probe round sends a few messages per peer; 64 queued means the peer is not
# draining (dead or slow) and older ones are stale anyway (SWIM tolerates loss by design).
MAX_OUTBOX = 64
# Outboxes kept at once (one per address we talk to); more peers than members is a bug or abuse.
MAX_OUTBOXES = 1024
OUTBOX_IDLE_S = 30.0  # a sender task with nothing to send for this long exits

Subscriber = Callable[[MemberChanged], None]


class SwimDriver:
    """Runs one `Swim` core on the event loop (async context manager)."""

    def __init__(self, swim: Swim, transport: Transport, *, send_timeout_s: float = 1.0,
                 banned: Callable[[str], bool] | None = None) -> None:
        self.swim = swim
        # Revoked node ids: their own messages fail the envelope check; this also drops "alive" news
        # about them relayed by peers that have not heard of the revocation yet.
        self.banned = banned
        self.transport = transport
        self.send_timeout_s = send_timeout_s
        self.counters: Counter[str] = Counter()
        self._subs: list[Subscriber] = []
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        # A gossip round with no broadcast queued sends nothing: its timer is parked here (when it
        # was due) instead of waking the loop 5 times a second, and armed again by `apply` as soon
        # as an input queues a broadcast.
        self._gossip_parked: float | None = None
        self._outboxes: dict[str, tuple[deque[tuple[NodeId | None, SwimMsg]], asyncio.Event]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        for kind in sorted(SWIM_KINDS):
            transport.route_oneway(kind, self._on_envelope)

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback` (synchronously, on the loop) for every MemberChanged."""
        self._subs.append(callback)

    @property
    def now(self) -> float:
        return self._loop.time()

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self.apply(self.swim.start(self.now))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        for q, ev in self._outboxes.values():
            q.clear()
            ev.set()  # wakes each sender, which sees the cleared queue and exits below
        self._outboxes.clear()
        tg, self._tg = self._tg, None
        if tg is not None:
            await tg.__aexit__(None, None, None)

    def join(self, seeds: list[str]) -> None:
        """Push-pull with `seeds` (addresses); the core retries while nobody knows us."""
        self.apply(self.swim.join(self.now, seeds))

    def declare_dead(self, node: NodeId, me: NodeId) -> None:
        """Mark `node` dead now and gossip it (its certificate was revoked: it cannot refute)."""
        m = self.swim.member(node)
        if m is None or node == me:
            return
        self.apply(self.swim.on_message(self.now, me, Gossip(updates=(Dead(node=node, inc=m.incarnation, src=me),))))

    def set_meta(self, meta: dict[str, str]) -> None:
        self.apply(self.swim.set_meta(self.now, meta))

    async def leave(self, grace_s: float) -> None:
        """Graceful leave: tell peers, then wait up to `grace_s` for the news and outboxes to drain."""
        self.apply(self.swim.leave(self.now))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while self.swim.pending_broadcasts or any(q for q, _ in self._outboxes.values()):
                    self._drained.clear()
                    await self._drained.wait()

    # ----- effects -------------------------------------------------------------------------------
    def apply(self, effects: list[Effect]) -> None:
        for e in effects:
            match e:
                case Send(to=to, msg=msg):
                    addr = self.swim.addr_of(to)
                    if addr is None:
                        self.counters["send_no_addr"] += 1
                    else:
                        self._enqueue(addr, to, msg)
                case SendAddr(addr=addr, msg=msg):
                    self._enqueue(addr, None, msg)
                case Wake(at=at, key=key):
                    if isinstance(key, GossipTick) and not self.swim.pending_broadcasts:
                        self._arm(float("inf"), key)
                        self._gossip_parked = at
                    else:
                        self._arm(at, key)
                case MemberChanged():
                    for cb in list(self._subs):
                        try:
                            cb(e)
                        except Exception:
                            log.exception("membership subscriber failed", extra={"peer": e.node})
        if self._gossip_parked is not None and self.swim.pending_broadcasts:
            at, self._gossip_parked = self._gossip_parked, None
            self._arm(at, GossipTick())  # overdue: fires at once

    def _arm(self, at: float, key: Hashable) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        if at != float("inf") and self._tg is not None:
            self._timers[key] = self._loop.call_at(at, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        try:
            self.apply(self.swim.on_timer(self.now, key))
        except Exception:  # one timer turn is a unit of work: log it, keep the node running
            log.exception("membership timer failed", extra={"key": type(key).__name__})

    def _enqueue(self, addr: str, to: NodeId | None, msg: SwimMsg) -> None:
        box = self._outboxes.get(addr)
        if box is None:
            if self._tg is None or len(self._outboxes) >= MAX_OUTBOXES:
                self.counters["send_dropped"] += 1
                return
            box = (deque(), asyncio.Event())
            self._outboxes[addr] = box
            self._tg.create_task(self._sender(addr, box), name=f"swim-out-{addr}")
        q, ev = box
        if len(q) >= MAX_OUTBOX:
            q.popleft()
            self.counters["send_dropped"] += 1
        q.append((to, msg))
        ev.set()

    async def _sender(self, addr: str, box: tuple[deque[tuple[NodeId | None, SwimMsg]], asyncio.Event]) -> None:
        q, ev = box
        try:
            while self._outboxes.get(addr) is box:
                if not q:
                    self._drained.set()
                    ev.clear()
                    try:
                        async with asyncio.timeout(OUTBOX_IDLE_S):
                            await ev.wait()
                    except TimeoutError:
                        return
                    continue
                to, msg = q.popleft()
                try:
                    await self.transport.send(addr, msg.kind, msg, self.send_timeout_s, to=to, ack=False)
                    self.counters["sent"] += 1
                except FederationError:
                    # Unreachable: what is queued behind it is as stale as it (SWIM repairs loss).
                    self.counters["send_failed"] += 1 + len(q)
                    q.clear()
        finally:
            if self._outboxes.get(addr) is box:
                del self._outboxes[addr]
            self._drained.set()

    # ----- inbound ------------------------------------------------------------------------------
    async def _on_envelope(self, v: Verified) -> None:
        """A verified `swim.*` envelope: the sender is authenticated by its certificate."""
        body = v.body
        if not isinstance(body, SWIM_TYPES):
            self.counters["recv_bad_type"] += 1
            return
        if self.banned is not None:
            body = self._without_banned(body, self.banned)
        self.apply(self.swim.on_message(self.now, v.sender, body))

    def _without_banned(self, msg: SwimMsg, banned: Callable[[str], bool]) -> SwimMsg:
        if isinstance(msg, (Sync, SyncReply)):
            keep = tuple(r for r in msg.states if not (r.state == "alive" and banned(r.node)))
            if len(keep) != len(msg.states):
                self.counters["banned_dropped"] += len(msg.states) - len(keep)
                return msg.model_copy(update={"states": keep})
            return msg
        field = "updates" if isinstance(msg, Gossip) else "gossip" if isinstance(msg, (Ping, Ack, PingReq)) else ""
        if not field:
            return msg
        updates = getattr(msg, field)
        keep_u = tuple(u for u in updates if not (isinstance(u, Alive) and banned(u.node)))
        if len(keep_u) != len(updates):
            self.counters["banned_dropped"] += len(updates) - len(keep_u)
            return msg.model_copy(update={field: keep_u})
        return msg


__all__ = ["MAX_OUTBOX", "SwimDriver"]
