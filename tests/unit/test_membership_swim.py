"""The SWIM core driven by hand: probe, indirect probe, suspicion, refutation, join, leave, caps."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.membership import (
    Ack,
    Alive,
    Dead,
    Gossip,
    GossipTick,
    JoinTick,
    MemberChanged,
    MemberRecord,
    MemberState,
    Nack,
    Ping,
    PingReq,
    ProbeTick,
    ProbeTimeout,
    RelayTimeout,
    SendAddr,
    Suspect,
    SuspicionTimeout,
    Swim,
    SwimConfig,
    Sync,
    SyncReply,
)
from federation.membership.broadcasts import BroadcastQueue
from federation.sansio import NodeId, Send, Wake

CFG = SwimConfig.lan()
A, B, C, D, E = (NodeId(x) for x in "abcde")


def mk(nid: NodeId, cfg: SwimConfig = CFG, **kw: Any) -> Swim:
    return Swim(nid, f"addr-{nid}", cfg, random.Random(7), **kw)


def know(s: Swim, *nodes: NodeId, inc: int = 0) -> None:
    updates = tuple(Alive(node=n, inc=inc, addr=f"addr-{n}") for n in nodes)
    s.on_message(0.0, NodeId("zz"), Gossip(updates=updates))


def sends(effects: list[Any]) -> list[Send[Any]]:
    return [e for e in effects if isinstance(e, Send)]


def changes(effects: list[Any]) -> list[MemberChanged]:
    return [e for e in effects if isinstance(e, MemberChanged)]


def wakes(effects: list[Any], key_type: type) -> list[Wake]:
    return [e for e in effects if isinstance(e, Wake) and isinstance(e.key, key_type)]


def probe(s: Swim, now: float) -> tuple[NodeId, int, list[Any]]:
    """Run a probe tick; return the pinged node, the ping's seq and all effects."""
    effects = s.on_timer(now, ProbeTick())
    (ping,) = [e for e in sends(effects) if isinstance(e.msg, Ping)]
    return ping.to, ping.msg.seq, effects


# ----- construction and commands ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"self_id": ""}, "self_id:"),
        ({"addr": ""}, "addr:"),
        ({"incarnation": -1}, "incarnation:"),
        ({"incarnation": True}, "incarnation:"),
        ({"meta": {f"k{i}": "v" for i in range(33)}}, "meta: at most 32"),
        ({"meta": {"": "v"}}, "meta: key"),
        ({"meta": {"k": "v" * 600}}, "meta.k:"),
    ],
)
def test_bad_constructor_argument_names_the_field(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"self_id": A, "addr": "x", "config": CFG, "rng": random.Random(0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Swim(**args)


def test_bad_seed_names_its_index() -> None:
    with pytest.raises(ValueError, match=r"seeds\[1\]"):
        mk(A).join(0.0, ["ok", ""])
    with pytest.raises(ValueError, match="seeds: at most"):
        mk(A).join(0.0, ["s"] * 65)


def test_members_snapshot_includes_self_sorted() -> None:
    s = mk(B, meta={"role": "gpu"}, incarnation=5)
    know(s, C, A)
    ms = s.members()
    assert [m.node for m in ms] == [A, B, C]
    assert ms[1].state == MemberState.ALIVE and ms[1].incarnation == 5 and ms[1].meta == {"role": "gpu"}
    assert s.addr_of(C) == "addr-c" and s.addr_of(E) is None


def test_start_arms_staggered_periodic_timers() -> None:
    effects = mk(A).start(100.0)
    keys = {type(w.key).__name__ for w in effects if isinstance(w, Wake)}
    assert keys == {"ProbeTick", "GossipTick", "SyncTick", "ReconnectTick"}
    assert all(100.0 <= w.at <= 100.0 + CFG.reconnect_interval_s for w in effects if isinstance(w, Wake))


def test_join_push_pulls_with_the_seed_and_both_learn_each_other() -> None:
    a, b = mk(A), mk(B)
    effects = a.join(0.0, ["addr-b", "addr-a"])  # our own address is skipped
    (out,) = [e for e in effects if isinstance(e, SendAddr)]
    assert out.addr == "addr-b" and isinstance(out.msg, Sync) and out.msg.join
    b_effects = b.on_message(0.1, A, out.msg)
    assert [c.node for c in changes(b_effects)] == [A]
    (reply,) = sends(b_effects)
    assert reply.to == A and isinstance(reply.msg, SyncReply)
    assert [c.node for c in changes(a.on_message(0.2, B, reply.msg))] == [B]
    assert a.on_timer(1.0, JoinTick()) == []  # answered: no more retries


def test_join_retries_seeds_with_back_off_until_answered() -> None:
    a = mk(A)
    a.join(0.0, ["addr-b"])
    first = a.on_timer(1.0, JoinTick())
    assert [type(e).__name__ for e in first] == ["SendAddr", "Wake"]
    second = a.on_timer(3.0, JoinTick())
    gaps = [w.at - now for w, now in ((wakes(first, JoinTick)[0], 1.0), (wakes(second, JoinTick)[0], 3.0))]
    assert gaps[1] == 2 * gaps[0]


# ----- probing -----------------------------------------------------------------------------------
def test_acked_probe_raises_no_suspicion() -> None:
    a = mk(A)
    know(a, B, C)
    target, seq, _ = probe(a, 1.0)
    a.on_message(1.01, target, Ack(seq=seq))
    effects = a.on_timer(2.0, ProbeTick())
    assert changes(effects) == []
    assert a.counters.probes_failed == 0


def test_probe_visits_every_member_once_per_round() -> None:
    a = mk(A)
    know(a, B, C, D, E)
    seen = []
    for i in range(4):
        target, seq, _ = probe(a, float(i))
        a.on_message(i + 0.01, target, Ack(seq=seq))
        seen.append(target)
    assert sorted(seen) == [B, C, D, E]


def test_missing_ack_asks_k_others_then_relayed_ack_saves_the_target() -> None:
    a = mk(A)
    know(a, B, C, D, E)
    target, seq, _ = probe(a, 1.0)
    reqs = sends(a.on_timer(1.5, ProbeTimeout(seq)))
    assert len(reqs) == 3 and all(isinstance(r.msg, PingReq) for r in reqs)
    assert target not in {r.to for r in reqs} and A not in {r.to for r in reqs}
    req = reqs[0]
    relay = mk(req.to)
    know(relay, *[n for n in (A, B, C, D, E) if n != req.to])
    # The relay pings the target under its own seq and forwards the ack under ours.
    (ping,) = sends(relay.on_message(1.51, A, req.msg))
    assert ping.to == target and isinstance(ping.msg, Ping) and ping.msg.target == target
    (forwarded,) = sends(relay.on_message(1.52, target, Ack(seq=ping.msg.seq)))
    assert forwarded.to == A and forwarded.msg.seq == seq
    a.on_message(1.53, req.to, forwarded.msg)
    assert changes(a.on_timer(2.0, ProbeTick())) == []
    assert a.counters.probes_failed == 0


def test_relay_sends_nack_when_target_is_silent() -> None:
    c = mk(C)
    know(c, A, B)
    effects = c.on_message(0.0, A, PingReq(seq=42, target=B, target_addr="addr-b"))
    (w,) = wakes(effects, RelayTimeout)
    assert w.at == pytest.approx(0.8 * CFG.probe_timeout_s)
    (nack,) = sends(c.on_timer(w.at, w.key))
    assert nack.to == A and nack.msg == Nack(seq=42)
    assert c.on_timer(w.at, w.key) == []  # once


def test_relay_to_an_unknown_target_uses_its_address() -> None:
    c = mk(C)
    effects = c.on_message(0.0, A, PingReq(seq=1, target=E, target_addr="10.0.0.5:7701"))
    (out,) = [e for e in effects if isinstance(e, SendAddr)]
    assert out.addr == "10.0.0.5:7701" and isinstance(out.msg, Ping) and out.msg.target == E


def test_failed_probe_suspects_and_missing_nacks_lower_our_health() -> None:
    a = mk(A)
    know(a, B, C, D)
    target, seq, _ = probe(a, 1.0)
    reqs = sends(a.on_timer(1.5, ProbeTimeout(seq)))
    assert len(reqs) == 2
    a.on_message(1.9, reqs[0].to, Nack(seq=seq))  # one relay answered "cannot reach it either"
    effects = a.on_timer(2.0, ProbeTick())
    (ch,) = changes(effects)
    assert (ch.node, ch.state) == (target, MemberState.SUSPECT)
    assert a.health_score == 1  # 2 nacks expected, 1 came
    # A degraded node probes more slowly (Lifeguard local health).
    (nxt,) = wakes(effects, ProbeTick)
    assert nxt.at == pytest.approx(2.0 + 2 * CFG.probe_interval_s)


def test_all_nacks_mean_our_link_is_fine() -> None:
    a = mk(A)
    know(a, B, C, D)
    _, seq, _ = probe(a, 1.0)
    for r in sends(a.on_timer(1.5, ProbeTimeout(seq))):
        a.on_message(1.9, r.to, Nack(seq=seq))
    a.on_timer(2.0, ProbeTick())
    assert a.health_score == 0


def test_suspect_is_pinged_with_the_accusation_so_it_can_refute() -> None:
    a = mk(A)
    know(a, B)
    a.on_message(0.0, C, Gossip(updates=(Suspect(node=B, inc=0, src=C),)))
    _, _, effects = probe(a, 1.0)
    (ping,) = sends(effects)
    assert Suspect(node=B, inc=0, src=A) in ping.msg.gossip


# ----- suspicion, refutation, death ----------------------------------------------------------------
def test_suspicion_times_out_to_dead_and_confirmations_shorten_it() -> None:
    a = mk(A)
    know(a, B, C, D, E)
    e1 = a.on_message(0.0, C, Gossip(updates=(Suspect(node=B, inc=0, src=C),)))
    (w1,) = wakes(e1, SuspicionTimeout)
    (w2,) = wakes(a.on_message(0.1, D, Gossip(updates=(Suspect(node=B, inc=0, src=D),))), SuspicionTimeout)
    (w3,) = wakes(a.on_message(0.2, E, Gossip(updates=(Suspect(node=B, inc=0, src=E),))), SuspicionTimeout)
    assert w1.at > w2.at > w3.at
    assert w3.at == pytest.approx(4.0 + CFG.suspicion_grace_s)
    assert a.on_message(0.3, E, Gossip(updates=(Suspect(node=B, inc=0, src=E),))) == []  # repeat
    (ch,) = changes(a.on_timer(w3.at, w3.key))
    assert (ch.node, ch.state) == (B, MemberState.DEAD)
    assert a.on_timer(w1.at, w1.key) == []


def test_early_suspicion_timer_rearms_instead_of_killing() -> None:
    a = mk(A)
    know(a, B, C, D)
    (w,) = wakes(a.on_message(0.0, C, Gossip(updates=(Suspect(node=B, inc=0, src=C),))), SuspicionTimeout)
    effects = a.on_timer(w.at - 1.0, w.key)
    assert effects == [Wake(w.at, w.key)]


def test_suspect_refuted_by_higher_incarnation_only() -> None:
    a = mk(A)
    know(a, B, C)
    a.on_message(0.0, C, Gossip(updates=(Suspect(node=B, inc=0, src=C),)))
    assert a.on_message(0.1, C, Gossip(updates=(Alive(node=B, inc=0, addr="addr-b"),))) == []
    effects = a.on_message(0.2, B, Gossip(updates=(Alive(node=B, inc=1, addr="addr-b"),)))
    assert changes(effects) == [MemberChanged(B, MemberState.ALIVE, 1, "addr-b")]
    assert Wake(math.inf, SuspicionTimeout(B)) in effects
    assert a.member(B).state == MemberState.ALIVE  # type: ignore[union-attr]


def test_suspected_node_refutes_with_a_bumped_incarnation_and_tells_the_accuser() -> None:
    b = mk(B, incarnation=4)
    know(b, A, C)
    effects = b.on_message(0.0, A, Gossip(updates=(Suspect(node=B, inc=4, src=C),)))
    assert b.incarnation == 5 and b.counters.refutations == 1 and b.health_score == 1
    told = {s.to for s in sends(effects) if s.msg == Gossip(updates=(Alive(node=B, inc=5, addr="addr-b"),))}
    assert {A, C} <= told
    # A stale accusation (older incarnation) is not news: no second bump, accuser already told.
    assert b.on_message(0.1, A, Gossip(updates=(Suspect(node=B, inc=3, src=C),))) == []
    assert b.incarnation == 5


def test_dead_about_ourselves_is_refuted_but_not_after_leaving() -> None:
    b = mk(B)
    know(b, A)
    b.on_message(0.0, A, Gossip(updates=(Dead(node=B, inc=0, src=A),)))
    assert b.incarnation == 1 and b.member(B).state == MemberState.ALIVE  # type: ignore[union-attr]
    b.leave(1.0)
    b.on_message(1.1, A, Gossip(updates=(Dead(node=B, inc=7, src=A),)))
    assert b.incarnation == 1 and b.member(B).state == MemberState.LEFT  # type: ignore[union-attr]


def test_restarted_node_with_higher_incarnation_revives_a_dead_member() -> None:
    a = mk(A)
    know(a, B)
    a.on_message(0.0, C, Gossip(updates=(Dead(node=B, inc=0, src=C),)))
    assert a.member(B).state == MemberState.DEAD  # type: ignore[union-attr]
    effects = a.on_message(1.0, B, Gossip(updates=(Alive(node=B, inc=10**6, addr="new-addr"),)))
    assert changes(effects) == [MemberChanged(B, MemberState.ALIVE, 10**6, "new-addr")]


def test_push_pull_dead_only_makes_us_suspect() -> None:
    a = mk(A)
    know(a, B)
    rec = MemberRecord(node=B, addr="addr-b", state="dead", inc=0)
    effects = a.on_message(0.0, C, SyncReply(states=(rec,)))
    assert [c.state for c in changes(effects)] == [MemberState.SUSPECT]


def test_push_pull_is_answered_with_our_state_after_merging() -> None:
    a = mk(A)
    rec = MemberRecord(node=B, addr="addr-b", state="alive", inc=3)
    (reply,) = sends(a.on_message(0.0, B, Sync(states=(rec,))))
    assert reply.to == B and isinstance(reply.msg, SyncReply)
    assert {(r.node, r.state, r.inc) for r in reply.msg.states} == {(A, "alive", 0), (B, "alive", 3)}


# ----- leave and reaping ---------------------------------------------------------------------------
def test_leave_tells_peers_who_mark_it_left_and_probing_stops() -> None:
    a, b = mk(A), mk(B)
    know(a, B, C)
    know(b, A)
    effects = a.leave(5.0)
    gossip = [s for s in sends(effects) if isinstance(s.msg, Gossip)]
    assert gossip and Dead(node=A, inc=0, src=A) in gossip[0].msg.updates
    got = [c for c in changes(b.on_message(5.1, A, gossip[0].msg)) if c.node == A]
    assert got == [MemberChanged(A, MemberState.LEFT, 0, "addr-a")]
    assert a.on_timer(6.0, ProbeTick()) == []
    assert a.leave(6.0) == []


def test_dead_members_are_reaped_after_dead_reap_s() -> None:
    a = mk(A)
    know(a, B, C)
    a.on_message(0.0, C, Gossip(updates=(Dead(node=B, inc=0, src=C),)))
    for i in range(3):
        a.on_timer(1.0 + i, ProbeTick())
    assert a.member(B) is not None
    for i in range(3):
        a.on_timer(CFG.dead_reap_s + 2.0 + i, ProbeTick())
    assert a.member(B) is None


def test_gossip_round_sends_pending_updates_to_gossip_nodes_peers() -> None:
    a = mk(A)
    know(a, B, C, D, E)
    effects = a.on_timer(0.2, GossipTick())
    out = sends(effects)
    assert len(out) == CFG.gossip_nodes and all(isinstance(s.msg, Gossip) for s in out)
    assert wakes(effects, GossipTick)[0].at == pytest.approx(0.4)


def test_broadcasts_stop_after_the_retransmit_limit() -> None:
    a = mk(A)
    know(a, B)  # 2 members: limit 4 * ceil(log10 3) = 4
    total = 0
    for i in range(10):
        total += sum(len(s.msg.updates) for s in sends(a.on_timer(i * 0.2, GossipTick())))
    assert total == 4  # b's alive, 4 times
    assert a.pending_broadcasts == 0


# ----- caps and hostile input ----------------------------------------------------------------------
def test_member_cap_drops_and_counts_but_evicts_the_dead_first() -> None:
    a = mk(A, cfg=SwimConfig(max_members=3))
    know(a, B, C, D)
    assert a.member(D) is None and a.counters.members_dropped == 1
    a.on_message(0.0, C, Gossip(updates=(Dead(node=B, inc=0, src=C),)))
    know(a, E)
    assert a.member(E) is not None and a.member(B) is None


def test_relay_cap_drops_and_counts() -> None:
    c = mk(C, cfg=SwimConfig(max_relays=1))
    c.on_message(0.0, A, PingReq(seq=1, target=B, target_addr="b"))
    assert sends(c.on_message(0.0, A, PingReq(seq=2, target=D, target_addr="d"))) == []
    assert c.counters.relays_dropped == 1


def test_broadcast_queue_cap_drops_most_sent_first() -> None:
    q = BroadcastQueue(cap=2)
    q.put(Alive(node=A, inc=0, addr="a"))
    q.take(1, 10)
    q.put(Alive(node=B, inc=0, addr="b"))
    q.put(Alive(node=C, inc=0, addr="c"))
    assert len(q) == 2 and q.dropped == 1 and q.pending(A) is None


# Objects a validating decoder would never produce, built the way a buggy or hostile driver might.
_V2_PING: Any = Ping.model_construct(seq=1, target=A, gossip=())
object.__setattr__(_V2_PING, "v", 2)
_JUNK_GOSSIP: Any = Gossip.model_construct(updates=(object(),))  # type: ignore[arg-type]  # hostile on purpose
_V9_ALIVE: Any = Alive.model_construct(node=C, inc=1, addr="c", meta={})
object.__setattr__(_V9_ALIVE, "v", 9)


@pytest.mark.parametrize(
    ("msg", "src", "counter"),
    [
        (_V2_PING, B, "ignored_bad_version"),
        (object(), B, "ignored_unknown_type"),
        (Ping(seq=1, target=A), A, "ignored_from_self"),
        (Ping(seq=1, target=E), B, "ignored_wrong_target"),
        (Ack(seq=999), B, "ignored_unexpected_ack"),
        (Nack(seq=999), B, "ignored_unexpected_ack"),
        (_JUNK_GOSSIP, B, "ignored_unknown_type"),
        (Gossip.model_construct(updates=(_V9_ALIVE,)), B, "ignored_bad_version"),
    ],
)
def test_bad_peer_input_is_ignored_and_counted(msg: Any, src: NodeId, counter: str) -> None:
    a = mk(A)
    know(a, B)
    before = a.members()
    assert sends(a.on_message(1.0, src, msg)) == []
    assert getattr(a.counters, counter) == 1
    assert a.members() == before


def test_unknown_and_stale_timers_are_harmless() -> None:
    a = mk(A)
    know(a, B)
    assert a.on_timer(0.0, "nonsense") == []
    assert a.counters.ignored_unknown_timer == 1
    assert a.on_timer(0.0, ProbeTimeout(12345)) == []
    assert a.on_timer(0.0, SuspicionTimeout(B)) == []
    assert a.on_timer(0.0, RelayTimeout(3)) == []


ids = st.sampled_from([A, B, C, D, E])
incs = st.integers(0, 3)
updates = st.one_of(
    st.builds(Alive, node=ids, inc=incs, addr=st.sampled_from(["x", "y"])),
    st.builds(Suspect, node=ids, inc=incs, src=ids),
    st.builds(Dead, node=ids, inc=incs, src=ids),
)
gossips = st.lists(updates, max_size=4).map(tuple)
messages = st.one_of(
    st.builds(Ping, seq=st.integers(0, 5), target=ids, gossip=gossips),
    st.builds(Ack, seq=st.integers(0, 5), gossip=gossips),
    st.builds(Nack, seq=st.integers(0, 5)),
    st.builds(PingReq, seq=st.integers(0, 5), target=ids, target_addr=st.just("t"), gossip=gossips),
    st.builds(Gossip, updates=gossips),
)
timers: st.SearchStrategy[Hashable] = st.one_of(
    st.just(ProbeTick()),
    st.builds(ProbeTimeout, st.integers(0, 5)),
    st.just(GossipTick()),
    st.builds(SuspicionTimeout, ids),
    st.builds(RelayTimeout, st.integers(0, 5)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), ids, messages, timers), max_size=40))
def test_random_message_and_timer_sequences_never_raise_and_keep_invariants(
    steps: list[tuple[bool, NodeId, Any, Hashable]],
) -> None:
    a = mk(A, cfg=SwimConfig(max_members=4))
    a.start(0.0)
    last_inc = a.incarnation
    for i, (is_msg, src, msg, key) in enumerate(steps):
        now = i * 0.3
        a.on_message(now, src, msg) if is_msg else a.on_timer(now, key)
        assert a.member(A).state == MemberState.ALIVE  # type: ignore[union-attr]
        assert a.incarnation >= last_inc
        last_inc = a.incarnation
        assert len(a.members()) <= 4


def test_set_meta_bumps_incarnation_and_peers_see_the_new_meta() -> None:
    a, b = mk(A), mk(B)
    know(a, B)
    know(b, A)
    effects = a.set_meta(1.0, {"role": "controller"})
    assert a.incarnation == 1
    (g,) = [s for s in sends(effects) if s.to == B]
    b.on_message(1.1, A, g.msg)
    assert b.member(A).meta == {"role": "controller"}  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="meta: at most 32"):
        a.set_meta(2.0, {f"k{i}": "" for i in range(40)})
    assert a.incarnation == 1
