"""LmdbRaftStorage on a real LMDB store: reopen, crash (kill -9) durability, and the core on top."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from federation.consensus import (
    Entry,
    HardState,
    Raft,
    RaftConfig,
    Role,
    Snapshot,
    StorageCorrupt,
    TimerKey,
    VoteRequest,
    VoteResponse,
    bootstrap,
)
from federation.consensus.lmdb_log import LmdbRaftStorage
from federation.sansio import NodeId, Send
from storage import Store
from tests.sim.raft_history import ListStateMachine

ROOT = Path(__file__).resolve().parents[2]


def _entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(index=i, term=term, data=b"%d" % i) for i in range(lo, hi)]


def test_state_survives_reopen_and_unflushed_writes_do_not(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        st = LmdbRaftStorage(store, "c1")
        st.set_hard_state(HardState(4, NodeId("b")))
        st.append(_entries(1, 21))
        st.truncate_from(18)
        st.save_snapshot(Snapshot(5, 1, (NodeId("a"),), (NodeId("d"),), b"state"))
        st.flush()
        assert st.flushes == 1
        st.append(_entries(18, 19))  # never flushed: a crash loses it
    with Store.open(tmp_path / "db") as store:
        st = LmdbRaftStorage(store, "c1")
        assert st.hard_state() == HardState(4, NodeId("b"))
        assert (st.first_index(), st.last_index(), st.term_at(5), st.term_at(4)) == (6, 17, 1, None)
        snap = st.snapshot()
        assert snap is not None and (snap.data, snap.learners) == (b"state", ("d",))
        assert [e.data for e in st.entries(6, 8, 1 << 20)] == [b"6", b"7"]
        assert LmdbRaftStorage(store, "c2").last_index() == 0  # groups do not see each other


def test_conflicting_snapshot_drops_the_whole_log(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        st = LmdbRaftStorage(store, "g")
        st.append(_entries(1, 11))
        st.save_snapshot(Snapshot(8, 9, (), (), b""))
        st.flush()
        with pytest.raises(StorageCorrupt, match="gap"):
            st.append(_entries(5, 6))
    with Store.open(tmp_path / "db") as store:
        st = LmdbRaftStorage(store, "g")
        assert (st.first_index(), st.last_index()) == (9, 8)


def test_bad_group_name_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store, pytest.raises(ValueError, match="group"):
        LmdbRaftStorage(store, "a/b")


def test_core_on_lmdb_batches_one_flush_per_call_and_restarts(tmp_path: Path) -> None:
    me = NodeId("a")
    with Store.open(tmp_path / "db") as store:
        st = LmdbRaftStorage(store, "c1")
        bootstrap(st, [me])
        raft = Raft(me, RaftConfig.lan(), st, ListStateMachine(), random.Random(1))
        raft.start(0.0)
        raft.on_timer(1.0, TimerKey.ELECTION)
        assert raft.role is Role.LEADER
        before = st.flushes
        _, first = raft.propose_batch(1.0, [b"x%d" % i for i in range(100)])
        assert first == 3 and st.flushes - before == 1  # 100 entries, one transaction
    with Store.open(tmp_path / "db") as store:
        st = LmdbRaftStorage(store, "c1")
        sm = ListStateMachine()
        raft = Raft(me, RaftConfig.lan(), st, sm, random.Random(2))
        assert raft.current_term == 1 and raft.status().voters == {me}
        raft.start(2.0)
        raft.on_timer(4.0, TimerKey.ELECTION)
        assert raft.role is Role.LEADER and raft.current_term == 2
        assert sm.applied[102] == b"x99"


CHILD = textwrap.dedent(
    """
    import random, sys
    from federation.consensus import Raft, RaftConfig, VoteRequest, bootstrap
    from federation.consensus.lmdb_log import LmdbRaftStorage
    from storage import Store
    from tests.sim.raft_history import ListStateMachine
    store = Store.open(sys.argv[1])
    st = LmdbRaftStorage(store, "c1")
    bootstrap(st, ["a", "b", "c"])
    raft = Raft("c", RaftConfig.test(), st, ListStateMachine(), random.Random(0))
    effects = raft.on_message(0.0, "a", VoteRequest(term=7, last_log_index=1, last_log_term=0))
    print(repr(effects[-1].msg.granted), flush=True)  # the reply leaves only after the flush
    sys.stdin.read()  # wait to be killed
    """
)


def test_a_vote_sent_before_kill_9_is_still_there_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "True"
        child.kill()
    finally:
        child.wait(timeout=10)
    with Store.open(db) as store:
        st = LmdbRaftStorage(store, "c1")
        assert st.hard_state() == HardState(7, NodeId("a"))
        raft = Raft(NodeId("c"), RaftConfig.test(), st, ListStateMachine(), random.Random(0))
        effects = raft.on_message(0.0, NodeId("b"), VoteRequest(term=7, last_log_index=9, last_log_term=0))
        sends = [e for e in effects if isinstance(e, Send)]
        assert sends[-1].msg == VoteResponse(term=7, granted=False)
