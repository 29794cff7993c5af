"""The chaos harness's pure parts, without daemons: schedules replay from a seed, and each
history checker fails on a history that breaks its rule (a checker that never fails proves nothing)."""

from __future__ import annotations

from tests.chaos.checkers import (
    check_commit_monotonic,
    check_inference,
    check_terms,
    expected_echo,
    expected_phantoms,
    fault_windows,
)
from tests.chaos.faults import LEADER, Kind, schedule
from tests.chaos.history import Event, History, Op, Outcome, Sample


def _op(kind: str, key: str, value: object, outcome: Outcome, status: int = 0, t0: float = 0.0,
        t1: float = 1.0, answer: object = None, message: str = "") -> Op:
    return Op(kind, 1, key, value, t0, t1, outcome, status, message, answer)


def test_a_schedule_is_a_pure_function_of_its_seed() -> None:
    assert schedule(42, 5) == schedule(42, 5)
    assert schedule(42, 5) != schedule(43, 5)
    kinds = {f.kind for s in range(200) for f in schedule(s, 5)}
    assert kinds == set(Kind)
    assert all(Kind.SKEW not in {f.kind for f in schedule(s, 5, skew_ok=False)} for s in range(50))
    for s in range(100):
        for f in schedule(s, 5):
            assert all(t == LEADER or 1 <= t <= 5 for t in f.targets)
            if f.kind is Kind.HALVES:
                assert len(f.targets) == 2  # a minority of 5


def test_two_leaders_in_one_term_are_a_violation() -> None:
    h = History(1)
    h.samples += [Sample(0, 1, "a", "leader", 3, "a", 10, True), Sample(0, 2, "b", "follower", 3, "a", 10, True),
                  Sample(1, 2, "b", "leader", 4, "b", 11, True)]
    assert check_terms(h) == []
    h.samples.append(Sample(2, 3, "c", "leader", 4, "c", 11, False))
    (v,) = check_terms(h)
    assert "term 4" in v.detail and "['b', 'c']" in v.detail


def test_commit_index_going_back_in_one_process_is_a_violation() -> None:
    h = History(1)
    h.samples += [Sample(t, 1, "a", "follower", 2, "b", c, True) for t, c in ((0, 5), (1, 7), (2, 7))]
    assert check_commit_monotonic(h) == []
    h.samples.append(Sample(3, 1, "a", "follower", 2, "b", 6, True))
    (v,) = check_commit_monotonic(h)
    assert "n1" in v.detail and "7 -> 6" in v.detail
    # a restart (kill9 healed) in between starts a new process: a smaller index is fine there
    h.events.append(Event(2.5, "heal", "kill9[n1] 4.0s", (1,)))
    assert check_commit_monotonic(h) == []


def test_expected_placements_follow_acknowledgements() -> None:
    h = History(1)
    h.ops += [
        _op("ctl.place", "kept", 1, Outcome.OK),
        _op("ctl.place", "gone", 1, Outcome.OK), _op("ctl.delete", "gone", None, Outcome.OK),
        _op("ctl.place", "maybe", 1, Outcome.TIMEOUT),
        _op("ctl.place", "refused", 1, Outcome.ERROR, 409),
        _op("ctl.place", "unsure", 1, Outcome.ERROR, 503),
        _op("ctl.place", "half", 1, Outcome.OK), _op("ctl.delete", "half", None, Outcome.TIMEOUT),
        _op("ctl.place", "never", 1, Outcome.DOWN),
    ]
    must, absent, either = expected_phantoms(h)
    assert must == {"kept"} and absent == {"gone", "refused", "never"} and either == {"maybe", "unsure", "half"}


def test_expected_echo_count_is_the_last_acknowledged_scale_or_a_later_unsure_one() -> None:
    h = History(1)
    assert expected_echo(h, 2) == {2}
    h.ops += [_op("ctl.scale", "echo", 3, Outcome.OK), _op("ctl.scale", "echo", 2, Outcome.ERROR, 409)]
    assert expected_echo(h, 2) == {3}
    h.ops.append(_op("ctl.scale", "echo", 2, Outcome.TIMEOUT))
    assert expected_echo(h, 2) == {2, 3}


def test_inference_checker_flags_wrong_answers_unclear_errors_and_hangs_without_faults() -> None:
    h = History(1)
    h.ops += [_op("infer", "echo", "m1", Outcome.OK, 200, answer={"outputs": ["echo: m1"]}),
              _op("infer", "echo", "m2", Outcome.ERROR, 503, message="no healthy instance")]
    assert check_inference(h)[0] == []
    h.ops.append(_op("infer", "echo", "m3", Outcome.OK, 200, answer={"outputs": ["echo: m9"]}))
    h.ops.append(_op("infer", "echo", "m4", Outcome.ERROR, 500, message=""))
    h.ops.append(_op("infer", "echo", "m5", Outcome.TIMEOUT, t0=20, t1=32))
    h.ops.append(_op("infer", "echo", "m6", Outcome.TIMEOUT, t0=5, t1=17))  # overlaps the fault below
    h.events += [Event(4, "fault", "sigstop[n2]", (2,)), Event(8, "heal", "sigstop[n2]", (2,))]
    violations, counts = check_inference(h)
    assert [v.detail.split(":")[0] for v in violations] == ["n1"] * 3
    assert "'m3'" in violations[0].detail and "'m4'" in violations[1].detail and "'m5'" in violations[2].detail
    assert counts == {"ok": 2, "error": 2, "timeout": 2}


def test_fault_windows_pair_faults_with_heals() -> None:
    h = History(1)
    h.events += [Event(1, "fault", "a"), Event(3, "heal", "a"), Event(5, "fault", "b")]
    assert fault_windows(h, tail_s=1) == [(1, 4), (5, float("inf"))]
