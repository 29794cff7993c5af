"""Follower side of the Raft core: AppendEntries consistency check and conflict hints,
truncation of a divergent suffix, and chunked InstallSnapshot reception.
"""

from __future__ import annotations

import logging

from federation.consensus.core import CONF, CoreState, PendingSnapshot, member_config
from federation.consensus.events import Role
from federation.consensus.log import Snapshot
from federation.consensus.membership import MemberConfig
from federation.consensus.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    InstallSnapshot,
    SnapshotResponse,
)
from federation.sansio import NodeId, Send

log = logging.getLogger(__name__)


class FollowerSide(CoreState):
    """What a node does with a leader's AppendEntries and InstallSnapshot (mixed into `Raft`)."""

    def _accept_leader(self, now: float, src: NodeId, term: int) -> bool:
        """Common checks for a leader's AppendEntries/InstallSnapshot; False if the message is stale."""
        if term < self._term:
            self.stats.dropped_stale += 1
            return False
        if term == self._term and self._role is Role.LEADER:
            self.stats.dropped_invalid += 1  # two leaders in one term cannot happen (§5.2); drop
            return False
        if term > self._term or self._role is not Role.FOLLOWER or self._leader != src:
            self._become_follower(now, term, src)
        self._last_leader_contact = now
        self._reset_election(now)
        return True

    def _on_append(self, now: float, src: NodeId, m: AppendEntries) -> None:
        if not self._accept_leader(now, src, m.term):
            if m.term < self._term:
                self._out.append(
                    Send(
                        src,
                        AppendResponse(
                            term=self._term, success=False, prev_index=m.prev_index, match_index=0
                        ),
                    )
                )
            return
        prev, prev_term, entries = m.prev_index, m.prev_term, list(m.entries)
        snap_index = self._st.first_index() - 1
        end = m.prev_index + len(m.entries)
        if prev < snap_index:
            # The prefix up to our snapshot is committed, so it matches the leader's: skip it.
            entries = [e for e in entries if e.index > snap_index]
            prev = snap_index
            t = self._st.term_at(snap_index)
            if entries and entries[0].index != prev + 1:
                self.stats.dropped_invalid += 1
                return
            prev_term = t if t is not None else 0
            if not entries:
                self._reply_append(src, m, True, max(end, 0))
                return
        last = self._st.last_index()
        if prev > last or self._st.term_at(prev) != prev_term:
            self._reject_append(src, m, prev, last)
            return
        new: list[Entry] = []
        for i, e in enumerate(entries):
            if e.index > last:
                new = entries[i:]
                break
            if self._st.term_at(e.index) != e.term:
                if e.index <= self._commit:
                    self.stats.dropped_invalid += 1  # would rewrite a committed entry: never
                    return
                self._truncate(e.index)
                new = entries[i:]
                break
        if new:
            self._st.append(new)
            added = [(e.index, member_config(e)) for e in new if e.type == CONF]
            if added:
                for index, conf in added:
                    self._confs.add(index, conf)
                self._emit_membership(added[-1][0])
        commit = min(m.leader_commit, end)
        if commit > self._commit:
            self._commit = commit
            self._apply_committed(now)
        self._reply_append(src, m, True, end)

    def _reply_append(self, src: NodeId, m: AppendEntries, success: bool, match: int) -> None:
        self._out.append(
            Send(
                src,
                AppendResponse(term=self._term, success=success, prev_index=m.prev_index, match_index=match),
            )
        )

    def _reject_append(self, src: NodeId, m: AppendEntries, prev: int, last: int) -> None:
        if prev > last:
            ci, ct = last + 1, 0
        else:
            ct = self._st.term_at(prev) or 0
            ci = prev
            floor = self._st.first_index()
            while ci - 1 >= floor and self._st.term_at(ci - 1) == ct:
                ci -= 1
        self._out.append(
            Send(
                src,
                AppendResponse(
                    term=self._term,
                    success=False,
                    prev_index=m.prev_index,
                    match_index=0,
                    conflict_index=max(ci, 1),
                    conflict_term=ct,
                ),
            )
        )

    def _truncate(self, index: int) -> None:
        self._st.truncate_from(index)
        if self._confs.truncate_from(index):
            self._emit_membership(index - 1)

    def _on_install_snapshot(self, now: float, src: NodeId, m: InstallSnapshot) -> None:
        if not self._accept_leader(now, src, m.term):
            if m.term < self._term:
                self._out.append(
                    Send(
                        src,
                        SnapshotResponse(term=self._term, last_index=m.last_index, next_offset=0, done=False),
                    )
                )
            return
        if m.last_index <= self._commit:
            self._pending_snap = None
            self._out.append(
                Send(
                    src, SnapshotResponse(term=self._term, last_index=m.last_index, next_offset=0, done=True)
                )
            )
            return
        ps = self._pending_snap
        if m.offset == 0:
            ps = self._pending_snap = PendingSnapshot(m.last_index, m.last_term)
        if ps is None or (ps.index, ps.term) != (m.last_index, m.last_term) or m.offset != len(ps.buf):
            have = len(ps.buf) if ps is not None and (ps.index, ps.term) == (m.last_index, m.last_term) else 0
            self._out.append(
                Send(
                    src,
                    SnapshotResponse(term=self._term, last_index=m.last_index, next_offset=have, done=False),
                )
            )
            return
        if len(ps.buf) + len(m.data) > self.cfg.max_snapshot_bytes:
            self._pending_snap = None
            self.stats.dropped_invalid += 1
            log.warning(
                "raft snapshot too large", extra={"node": self.id, "limit": self.cfg.max_snapshot_bytes}
            )
            return
        ps.buf.extend(m.data)
        if not m.done:
            self._out.append(
                Send(
                    src,
                    SnapshotResponse(
                        term=self._term, last_index=m.last_index, next_offset=len(ps.buf), done=False
                    ),
                )
            )
            return
        snap = Snapshot(
            m.last_index,
            m.last_term,
            tuple(map(NodeId, m.voters)),
            tuple(map(NodeId, m.learners)),
            bytes(ps.buf),
        )
        self._pending_snap = None
        keep = self._st.term_at(snap.index) == snap.term
        self._st.save_snapshot(snap)
        self._st.flush()
        self._sm.restore(snap.index, snap.data)
        self._commit = self._applied = snap.index
        conf = MemberConfig(frozenset(snap.voters), frozenset(snap.learners))
        self._confs.compact(snap.index, conf, keep_suffix=keep)
        self._emit_membership(snap.index)
        self.stats.snapshots_installed += 1
        self._out.append(
            Send(
                src,
                SnapshotResponse(
                    term=self._term, last_index=m.last_index, next_offset=len(snap.data), done=True
                ),
            )
        )


__all__ = ["FollowerSide"]
