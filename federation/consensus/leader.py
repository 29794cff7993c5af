"""Leader side of the Raft core: replication with flow control, commit by counting, snapshots
to lagging followers, write refusals (NotLeader / NoQuorum / ChangeInProgress) and automatic voter changes.
"""

from __future__ import annotations

import logging

from federation.consensus.core import CONF, CoreState, member_config
from federation.consensus.errors import (
    ChangeInProgress,
    NoQuorum,
    NotLeader,
    ProposeError,
    StorageCorrupt,
)
from federation.consensus.events import Role
from federation.consensus.membership import MemberConfig, plan_change
from federation.consensus.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    InstallSnapshot,
    SnapshotResponse,
)
from federation.consensus.progress import Progress, ProgressMode, majority, quorum_index
from federation.sansio import NodeId, Send

log = logging.getLogger(__name__)


class LeaderSide(CoreState):
    """What a node does while it leads (mixed into `Raft`)."""

    def _write_refusal(self, now: float) -> ProposeError | None:
        if self._role is not Role.LEADER:
            if self._leader is not None:
                return NotLeader(self._leader)
            return NoQuorum("no leader is reachable from this node")
        if self.cfg.check_quorum and not self._quorum_active(now):
            return NoQuorum("the leader has lost contact with a majority of voters")
        return None

    def _change_refusal(self) -> ProposeError | None:
        pending = self._pending_config_index()
        if pending:
            return ChangeInProgress(pending)
        if self._st.term_at(self._commit) != self._term:
            return ChangeInProgress(
                self._st.last_index()
            )  # commit an entry of our term first (thesis §4.1 fix)
        return None

    def _pending_config_index(self) -> int:
        if self._confs.last_index() > self._commit:
            return self._confs.last_index()
        return 0

    def _quorum_active(self, now: float) -> bool:
        voters = self._config().voters
        window = self.cfg.election_timeout_max_s
        if now - self._became_leader_at < window:
            return True  # just elected: the votes were the contact
        live = sum(
            1
            for v in voters
            if v == self.id or ((pr := self._progress.get(v)) is not None and now - pr.last_ack_at < window)
        )
        return live >= majority(len(voters))

    def _append_as_leader(self, now: float, entries: list[Entry]) -> None:
        self._st.append(entries)
        for e in entries:
            if e.type == CONF:
                self._confs.add(e.index, member_config(e))
                self._on_config_change(now, e.index)
        for peer, pr in self._progress.items():
            self._replicate(now, peer, pr, heartbeat=False)
        self._maybe_commit(now)

    def _propose_config(self, now: float, new: MemberConfig) -> int:
        index = self._st.last_index() + 1
        e = Entry(
            index=index,
            term=self._term,
            type=CONF,
            voters=tuple(sorted(new.voters)),
            learners=tuple(sorted(new.learners)),
        )
        log.info(
            "raft membership change", extra={"node": self.id, "index": index, "voters": sorted(new.voters)}
        )
        self._append_as_leader(now, [e])
        return index

    def _manage_members(self, now: float) -> None:
        if self._change_refusal() is not None or not self._alive:
            return
        if self.cfg.check_quorum and not self._quorum_active(now):
            return
        # Learners ack only once per learner heartbeat: give them two of those to count as caught up.
        window = max(self.cfg.election_timeout_max_s, 2 * self.cfg.learner_heartbeat_interval_s)
        caught_up = {
            p
            for p, pr in self._progress.items()
            if pr.match + self.cfg.catchup_slack >= self._commit and now - pr.last_ack_at < window
        }
        new = plan_change(
            self.id,
            self._config(),
            self._alive,
            caught_up,
            max_voters=self.cfg.max_voters,
            max_members=self.cfg.max_members,
            gone=self._gone,
        )
        if new is not None:
            self._propose_config(now, new)

    def _sync_progress(self, now: float) -> None:
        conf = self._config()
        members = (conf.voters | conf.learners) - {self.id}
        for gone in set(self._progress) - members:
            del self._progress[gone]
        nxt = self._st.last_index() + 1
        for m in sorted(members):  # sorted: effects come out in the same order in every process
            if m not in self._progress:
                self._progress[m] = Progress(next=nxt, last_ack_at=now)

    def _replicate(self, now: float, peer: NodeId, pr: Progress, *, heartbeat: bool) -> None:
        if pr.mode is ProgressMode.SNAPSHOT:
            return
        last = self._st.last_index()
        if pr.next < self._st.first_index():
            self._start_snapshot(now, peer, pr)
            return
        if pr.mode is ProgressMode.PROBE:
            can_send = not pr.inflight
        else:
            can_send = len(pr.inflight) < self.cfg.max_inflight and pr.next <= last
        if can_send:
            prev = pr.next - 1
            prev_term = self._st.term_at(prev)
            if prev_term is None:
                self._start_snapshot(now, peer, pr)
                return
            entries: list[Entry] = []
            if pr.next <= last:
                hi = min(last + 1, pr.next + self.cfg.max_entries_per_append)
                entries = self._st.entries(pr.next, hi, self.cfg.max_append_bytes)
            end = prev + len(entries)
            pr.commit_sent = max(pr.commit_sent, min(self._commit, end))
            self._out.append(
                Send(
                    peer,
                    AppendEntries(
                        term=self._term,
                        prev_index=prev,
                        prev_term=prev_term,
                        entries=tuple(entries),
                        leader_commit=min(self._commit, end),
                    ),
                )
            )
            pr.inflight.append((end, now))
            pr.last_sent_at = now
            if pr.mode is ProgressMode.REPLICATE:
                pr.next = end + 1
            return
        if heartbeat:
            match_term = self._st.term_at(pr.match)
            if match_term is None:
                self._start_snapshot(now, peer, pr)
                return
            pr.commit_sent = max(pr.commit_sent, min(self._commit, pr.match))
            pr.last_sent_at = now
            self._out.append(
                Send(
                    peer,
                    AppendEntries(
                        term=self._term,
                        prev_index=pr.match,
                        prev_term=match_term,
                        leader_commit=min(self._commit, pr.match),
                    ),
                )
            )

    def _on_append_response(self, now: float, src: NodeId, m: AppendResponse) -> None:
        if m.term > self._term:
            self._become_follower(now, m.term, None)
            return
        pr = self._progress.get(src)
        if m.term < self._term or self._role is not Role.LEADER or pr is None:
            self.stats.dropped_stale += 1
            return
        pr.last_ack_at = now
        if m.success:
            if m.match_index > self._st.last_index():
                self.stats.dropped_invalid += 1
                return
            pr.acked(m.match_index)
            self._maybe_commit(now)
            self._replicate(now, src, pr, heartbeat=False)
            self._announce_commit_to(now, src, pr)
            return
        if m.prev_index < pr.match or pr.mode is ProgressMode.SNAPSHOT:
            self.stats.dropped_stale += 1
            return
        if pr.mode is ProgressMode.PROBE and m.prev_index != pr.next - 1:
            self.stats.dropped_stale += 1
            return
        nxt = m.conflict_index
        if m.conflict_term > 0:
            found = self._last_index_of_term(m.conflict_term, m.prev_index)
            if found:
                nxt = found + 1
        pr.to_probe(max(1, min(nxt, m.prev_index)))
        self._replicate(now, src, pr, heartbeat=False)

    def _last_index_of_term(self, term: int, upto: int) -> int:
        i = min(upto, self._st.last_index())
        first = self._st.first_index() - 1
        while i >= first:
            t = self._st.term_at(i)
            if t is None or t < term:
                return 0
            if t == term:
                return i
            i -= 1
        return 0

    def _maybe_commit(self, now: float) -> None:
        voters = self._config().voters
        matches = [
            self._st.last_index() if v == self.id else (pr.match if (pr := self._progress.get(v)) else 0)
            for v in voters
        ]
        n = quorum_index(matches, len(voters))
        # Only entries of the current term commit by counting (Raft §5.4.2).
        if n > self._commit and self._st.term_at(n) == self._term:
            self._commit = n
            self._apply_committed(now)
            if (
                self._role is Role.LEADER
                and self.id not in self._config().voters
                and self._commit >= self._confs.last_index()
            ):
                log.info("raft leader removed from voters", extra={"node": self.id, "term": self._term})
                self._become_follower(now, self._term, None)
                return
            self._announce_commit(now)
            self._manage_members(now)

    def _announce_commit(self, now: float) -> None:
        """Tell idle followers a commit index they can use now, not at the next heartbeat."""
        for peer, pr in self._progress.items():
            self._announce_commit_to(now, peer, pr)

    def _announce_commit_to(self, now: float, peer: NodeId, pr: Progress) -> None:
        if (
            pr.mode is ProgressMode.REPLICATE
            and not pr.inflight
            and pr.commit_sent < min(self._commit, pr.match)
        ):
            self._replicate(now, peer, pr, heartbeat=True)

    # ----- snapshots (leader side) ------------------------------------------------------
    def _start_snapshot(self, now: float, peer: NodeId, pr: Progress) -> None:
        snap = self._st.snapshot()
        if snap is None:
            raise StorageCorrupt("log is compacted but no snapshot is stored")
        pr.mode = ProgressMode.SNAPSHOT
        pr.inflight.clear()
        pr.snap_index = snap.index
        pr.snap_offset = 0
        self._send_snapshot_chunk(now, peer, pr)

    def _send_snapshot_chunk(self, now: float, peer: NodeId, pr: Progress) -> None:
        snap = self._st.snapshot()
        if snap is None:
            raise StorageCorrupt("log is compacted but no snapshot is stored")
        if snap.index != pr.snap_index:
            pr.snap_index, pr.snap_offset = snap.index, 0
        chunk = snap.data[pr.snap_offset : pr.snap_offset + self.cfg.snapshot_chunk_bytes]
        self._out.append(
            Send(
                peer,
                InstallSnapshot(
                    term=self._term,
                    last_index=snap.index,
                    last_term=snap.term,
                    voters=snap.voters,
                    learners=snap.learners,
                    offset=pr.snap_offset,
                    data=chunk,
                    done=pr.snap_offset + len(chunk) >= len(snap.data),
                ),
            )
        )
        pr.snap_sent_at = now

    def _on_snapshot_response(self, now: float, src: NodeId, m: SnapshotResponse) -> None:
        if m.term > self._term:
            self._become_follower(now, m.term, None)
            return
        pr = self._progress.get(src)
        if m.term < self._term or self._role is not Role.LEADER or pr is None:
            self.stats.dropped_stale += 1
            return
        pr.last_ack_at = now
        if m.done:
            if m.last_index > self._st.last_index():
                self.stats.dropped_invalid += 1
                return
            pr.match = max(pr.match, m.last_index)
            if pr.mode is ProgressMode.SNAPSHOT:
                pr.to_probe(pr.match + 1)
                self._maybe_commit(now)
                self._replicate(now, src, pr, heartbeat=False)
            return
        if pr.mode is not ProgressMode.SNAPSHOT:
            self.stats.dropped_stale += 1
            return
        snap = self._st.snapshot()
        if (
            snap is not None
            and m.last_index == pr.snap_index == snap.index
            and m.next_offset <= len(snap.data)
        ):
            pr.snap_offset = m.next_offset
        else:
            pr.snap_offset = 0
        self._send_snapshot_chunk(now, src, pr)

    def _on_config_change(self, now: float, index: int) -> None:
        self._emit_membership(index)
        if self._role is Role.LEADER:
            self._sync_progress(now)


__all__ = ["LeaderSide"]
