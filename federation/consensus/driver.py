"""asyncio driver of one Raft group: feeds the sans-IO core, carries out its effects, holds timers.

Only the driver's loop task calls the core, in a worker thread (the core's storage flush blocks
on fsync), one batch of inputs per call (so a burst of proposals costs one fsync). A batch of idle
traffic that cannot write the log (heartbeats and their acks, see `_writes_nothing`) runs on the
loop instead: the thread hop would cost more CPU than the step itself. Sends go out
through a `RaftLink` per peer queue; notifications (Committed, RoleChanged, MembershipChanged)
go to `notify` on the loop. Not here: addresses, envelopes, which nodes are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from federation.consensus.errors import NoQuorum, NotLeader, ProposeError
from federation.consensus.events import Committed, MembershipChanged, RaftStatus, Role, RoleChanged
from federation.consensus.messages import AnyRaftMessage, AppendEntries, AppendResponse
from federation.consensus.raft import Raft
from federation.errors import FederationError
from federation.sansio import NodeId, Send, Wake

log = logging.getLogger(__name__)
Notice = Committed | RoleChanged | MembershipChanged
# Inputs waiting for the core: peers feed it, so it is capped (drops are counted; Raft retries).
MAX_INBOX = 4096
# Inputs handed to the core per worker-thread call (one fsync per call).
MAX_BATCH = 512
# Messages queued per peer: a slow or dead peer drops the oldest (heartbeats repair the loss).
MAX_OUTBOX = 256


class RaftLink(Protocol):
    async def send(self, to: NodeId, msg: AnyRaftMessage) -> None:
        """Deliver best-effort; raise OSError or FederationError on failure (counted, dropped)."""
        ...


@dataclass(slots=True)
class _Proposal:
    command: bytes
    done: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class _Members:
    alive: frozenset[NodeId]
    gone: frozenset[NodeId]


class RaftDriver:
    """`async with RaftDriver(core, link, notify) as d: await d.propose(b"...")`."""

    def __init__(self, core: Raft, link: RaftLink, notify: Callable[[Notice], None]) -> None:
        self.core, self._link, self._notify = core, link, notify
        self._inbox: asyncio.Queue[tuple[NodeId, AnyRaftMessage] | _Members | _Proposal] = (
            asyncio.Queue(MAX_INBOX))
        self._timers: dict[object, float] = {}
        self._outbox: dict[NodeId, asyncio.Queue[AnyRaftMessage]] = {}
        self._pending: dict[int, tuple[int, asyncio.Future[int]]] = {}  # index -> (term, future)
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stepping: asyncio.Future[tuple[list[object], tuple[int, int] | ProposeError | None]] | None = None
        self.status: RaftStatus = core.status()
        self.quorum = False  # leads and heard from a majority lately (as of the last step)
        self.dropped_in = self.dropped_out = self.send_errors = 0
        self.inline_steps = 0  # steps run on the loop (idle traffic), not in the worker thread

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        effects = await asyncio.to_thread(self.core.start, self._loop.time())
        self._carry_out(effects)
        self._tasks.append(self._tg.create_task(self._run(), name="raft-driver"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tg.__aexit__(None, None, None)
        if self._stepping is not None:
            with contextlib.suppress(Exception):
                await self._stepping  # the core's last step (and its fsync) finishes before we return
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NoQuorum("this node is shutting down"))

    def deliver(self, src: NodeId, msg: AnyRaftMessage) -> None:
        """Queue one verified message from `src` (dropped and counted when the inbox is full)."""
        try:
            self._inbox.put_nowait((src, msg))
        except asyncio.QueueFull:
            self.dropped_in += 1

    def set_members(self, alive: frozenset[NodeId], gone: frozenset[NodeId] = frozenset()) -> None:
        """Membership's view: the live nodes of this cluster, and those that left it for good."""
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(_Members(alive, gone))

    async def propose(self, command: bytes) -> int:
        """Commit one command; returns its log index once applied here.

        Raises:
            ProposeError: NotLeader (with a hint), NoQuorum, Busy, TooLarge; or NoQuorum when the
                entry was lost to a new leader or this node stepped down before it committed.
        """
        fut: asyncio.Future[int] = self._loop.create_future()
        try:
            self._inbox.put_nowait(_Proposal(command, fut))
        except asyncio.QueueFull:
            raise NoQuorum("the leader is overloaded") from None
        return await fut

    async def _run(self) -> None:
        while True:
            due = min(self._timers.values(), default=math.inf)
            wait = due - self._loop.time()
            batch: list[tuple[NodeId, AnyRaftMessage] | _Members | _Proposal] = []
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if math.isinf(wait) else wait):
                        batch.append(await self._inbox.get())
            while len(batch) < MAX_BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            now = self._loop.time()
            fired = [k for k, at in self._timers.items() if at <= now]
            for k in fired:
                del self._timers[k]
            proposals = [p for p in batch if isinstance(p, _Proposal)]
            if not fired and self._writes_nothing(batch):
                effects, result = self._step(now, batch, fired, proposals)  # no fsync: skip the hop
                self.inline_steps += 1
            else:
                # Shielded and remembered: a cancelled driver must not close the store under a running step.
                self._stepping = self._loop.run_in_executor(None, self._step, now, batch, fired, proposals)
                effects, result = await asyncio.shield(self._stepping)
            self._settle(proposals, result)  # first: a lone voter commits within the same step
            self._carry_out(effects)

    def _writes_nothing(self, batch: Sequence[object]) -> bool:
        """True if the core cannot write storage (or apply entries) while handling `batch`.

        Judged from the status the last step left (only steps change the core): a heartbeat of our
        leader in our term that brings no entries and no new commit index, an ack in our term from a
        follower that has everything while everything is committed, or a member list on a non-leader.
        Anything else (timers, proposals, votes, new terms) may write and goes to the worker thread.
        """
        st = self.status
        for item in batch:
            if isinstance(item, _Members):
                if st.role is Role.LEADER:
                    return False  # the leader may propose a membership change
                continue
            if not isinstance(item, tuple):
                return False  # a proposal
            src, msg = item
            if isinstance(msg, AppendEntries):
                if (msg.entries or msg.term != st.term or st.role is not Role.FOLLOWER or st.leader != src
                        or msg.leader_commit > st.commit_index):
                    return False
            elif isinstance(msg, AppendResponse):
                if (not msg.success or msg.term != st.term or st.role is not Role.LEADER
                        or st.commit_index != st.last_index or msg.match_index != st.last_index):
                    return False
            else:
                return False
        return True

    def _step(self, now: float, batch: Sequence[object], fired: list[object],
              proposals: list[_Proposal]) -> tuple[list[object], tuple[int, int] | ProposeError | None]:
        out: list[object] = []
        for k in fired:
            out += self.core.on_timer(now, k)
        for item in batch:
            if isinstance(item, tuple):
                out += self.core.on_message(now, item[0], item[1])
            elif isinstance(item, _Members):
                out += self.core.set_members(now, item.alive, item.gone)
        result: tuple[int, int] | ProposeError | None = None
        if proposals:
            effects, got = self.core.propose_batch(now, [p.command for p in proposals])
            out += effects
            result = got if isinstance(got, ProposeError) else (got, self.core.current_term)
        self.status = self.core.status()
        self.quorum = self.core.quorum_active(now)
        return out, result

    def _settle(self, proposals: list[_Proposal], result: tuple[int, int] | ProposeError | None) -> None:
        if result is None:
            return
        for i, p in enumerate(proposals):
            if p.done.done():  # the caller gave up (timeout, cancellation)
                continue
            if isinstance(result, ProposeError):
                err = result
                if isinstance(err, NotLeader) or self.status.role is not Role.LEADER:
                    err = NotLeader(self.status.leader)
                p.done.set_exception(err)
            else:
                self._pending[result[0] + i] = (result[1], p.done)

    def _carry_out(self, effects: Sequence[object]) -> None:
        for e in effects:
            if isinstance(e, Send):
                self._enqueue(e.to, e.msg)
            elif isinstance(e, Wake):
                if math.isinf(e.at):
                    self._timers.pop(e.key, None)
                else:
                    self._timers[e.key] = e.at
            elif isinstance(e, (Committed, RoleChanged, MembershipChanged)):
                if isinstance(e, Committed):
                    self._resolve(e)
                elif isinstance(e, RoleChanged) and e.role is not Role.LEADER:
                    self._fail_pending(NotLeader(e.leader))
                self._notify(e)

    def _resolve(self, c: Committed) -> None:
        got = self._pending.pop(c.index, None)
        if got is None or got[1].done():
            return
        if got[0] == c.term:
            got[1].set_result(c.index)
        else:
            got[1].set_exception(NoQuorum("the entry was replaced by a newer leader's log"))

    def _fail_pending(self, err: ProposeError) -> None:
        pending, self._pending = self._pending, {}
        for _, fut in pending.values():
            if not fut.done():
                fut.set_exception(err)

    def _enqueue(self, to: NodeId, msg: AnyRaftMessage) -> None:
        q = self._outbox.get(to)
        if q is None:
            if len(self._outbox) >= self.core.cfg.max_members or self._tg is None:
                self.dropped_out += 1
                return
            q = self._outbox[to] = asyncio.Queue(MAX_OUTBOX)
            self._tasks.append(self._tg.create_task(self._sender(to, q), name=f"raft-send-{to}"))
        if q.full():
            q.get_nowait()
            self.dropped_out += 1
        q.put_nowait(msg)

    async def _sender(self, to: NodeId, q: asyncio.Queue[AnyRaftMessage]) -> None:
        while True:
            msg = await q.get()
            try:
                await self._link.send(to, msg)
            except asyncio.CancelledError:
                raise
            except (OSError, FederationError) as e:  # the peer is gone or refused: Raft retries on its timers
                self.send_errors += 1
                log.debug("raft send failed", extra={"to": to, "error": type(e).__name__})


__all__ = ["MAX_BATCH", "MAX_INBOX", "MAX_OUTBOX", "Notice", "RaftDriver", "RaftLink"]
