"""Muxer joins by (session_id, seq_no) with a bounded pending map; Batcher and TimeBasedBatcher."""

from __future__ import annotations

import json

import pytest

from sdk import AIOSFile, AIOSPacket, Batcher, Muxer, TimeBasedBatcher


def pkt(session: str, seq: int, data: object, files: list[AIOSFile] | None = None, ts: float = 0.0,
        output_ptr: str = "") -> AIOSPacket:
    return AIOSPacket(session_id=session, seq_no=seq, data=json.dumps(data), files=files or [], ts=ts,
                      output_ptr=output_ptr)


def test_two_input_join_merges_in_arrival_order() -> None:
    m = Muxer(2)
    assert m.add(pkt("s", 1, {"a": 1}, [AIOSFile("m1", b"1")], ts=5.0)) is None
    assert m.pending == 1
    out = m.add(pkt("s", 1, {"b": 2}, [AIOSFile("m2", b"2")], ts=3.0, output_ptr="next"))
    assert out is not None
    assert (out.session_id, out.seq_no) == ("s", 1)
    assert json.loads(out.data) == {"inputs": [{"a": 1}, {"b": 2}]}
    assert [f.file_data for f in out.files] == [b"1", b"2"]
    assert out.ts == 5.0 and out.output_ptr == "next"
    assert m.pending == 0 and m.merged == 1


def test_join_keys_on_session_and_seq_no_both() -> None:
    m = Muxer(2)
    assert m.add(pkt("s", 1, 1)) is None
    assert m.add(pkt("t", 1, 2)) is None
    assert m.add(pkt("s", 2, 3)) is None
    out = m.add(pkt("t", 1, 4))
    assert out is not None and json.loads(out.data) == {"inputs": [2, 4]}
    assert m.pending == 2


def test_non_json_and_empty_inputs_are_kept() -> None:
    m = Muxer(3)
    m.add(AIOSPacket(session_id="s", seq_no=0, data="not json"))
    m.add(AIOSPacket(session_id="s", seq_no=0, data=""))
    out = m.add(pkt("s", 0, [1]))
    assert out is not None and json.loads(out.data) == {"inputs": ["not json", None, [1]]}


def test_pending_joins_are_capped_oldest_evicted_and_counted() -> None:
    m = Muxer(2, max_pending=3)
    for seq in range(5):
        assert m.add(pkt("s", seq, seq)) is None
    assert m.pending == 3 and m.evicted == 2
    assert m.add(pkt("s", 0, "late")) is None  # seq 0 was evicted: this starts a new join (and evicts seq 2)
    assert m.evicted == 3
    out = m.add(pkt("s", 4, "second"))
    assert out is not None and json.loads(out.data) == {"inputs": [4, "second"]}


def test_single_input_muxer_passes_through() -> None:
    out = Muxer(1).add(pkt("s", 1, {"x": 1}))
    assert out is not None and json.loads(out.data) == {"inputs": [{"x": 1}]}


@pytest.mark.parametrize("n", [0, -1, True, 1.5])
def test_muxer_rejects_bad_input_counts(n: object) -> None:
    with pytest.raises(ValueError, match="n_inputs"):
        Muxer(n)  # type: ignore[arg-type]  # deliberately wrong


def test_batcher_releases_full_batches_and_flushes() -> None:
    b: Batcher[int] = Batcher(3)
    assert [b.add(i) for i in range(7)] == [None, None, [0, 1, 2], None, None, [3, 4, 5], None]
    assert len(b) == 1
    assert b.flush() == [6] and b.flush() == []
    with pytest.raises(ValueError):
        Batcher(0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_based_batcher_releases_a_partial_batch_when_due() -> None:
    clock = Clock()
    b: TimeBasedBatcher[str] = TimeBasedBatcher(4, 0.5, clock=clock)
    assert b.poll() is None and b.time_left() is None
    assert b.add("a") is None
    clock.now += 0.2
    assert b.add("b") is None
    assert b.time_left() == pytest.approx(0.3)
    assert b.poll() is None
    clock.now += 0.3
    assert b.poll() == ["a", "b"]
    assert b.poll() is None
    # the timer restarts with the next first item, and add() itself releases a due batch
    assert b.add("c") is None
    clock.now += 0.6
    assert b.add("d") == ["c", "d"]
    # full batches still go at once
    assert [b.add(x) for x in "wxyz"] == [None, None, None, list("wxyz")]
    with pytest.raises(ValueError):
        TimeBasedBatcher(2, 0, clock=clock)
