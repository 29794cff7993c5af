"""The sans-IO asset fetch planner, the chunk manifest and the one-pass blob writer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from federation.assets import ChunkGet, Fetch, FetchPlanner, Manifest, PlanConfig, chunk_count
from federation.sansio import NodeId
from storage.blobs import BlobStore, chunk_digests

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def drain(plan: FetchPlanner, now: float = 0.0) -> list[Fetch]:
    """Serve every request successfully until the plan is done; the fetches in order."""
    served: list[Fetch] = []
    for _ in range(10_000):
        if plan.done:
            return served
        batch = plan.next(now)
        assert batch or plan.inflight, "planner stalled"
        for f in batch:
            plan.on_ok(f.index, f.holder, 1)
            served.append(f)
    raise AssertionError("did not finish")


@pytest.mark.parametrize(("size", "chunk", "count"), [(0, 4, 0), (1, 4, 1), (4, 4, 1), (5, 4, 2), (9, 4, 3)])
def test_chunk_count(size: int, chunk: int, count: int) -> None:
    assert chunk_count(size, chunk) == count


def test_manifest_spans_and_round_trip() -> None:
    data = bytes(range(10))
    chunks = tuple(hashlib.sha256(data[i:i + 4]).digest() for i in range(0, 10, 4))
    m = Manifest(hashlib.sha256(data).hexdigest(), 10, 4, chunks)
    assert [m.span(i) for i in range(3)] == [(0, 4), (4, 4), (8, 2)]
    assert Manifest.from_bytes(m.sha256, 10, 4, m.to_bytes()) == m
    with pytest.raises(ValueError, match="chunk digests"):
        Manifest(m.sha256, 10, 4, chunks[:2])
    with pytest.raises(ValueError, match="multiple of 32"):
        Manifest.from_bytes(m.sha256, 10, 4, b"x" * 33)


def test_chunk_request_refuses_bad_fields() -> None:
    with pytest.raises(ValidationError):
        ChunkGet(sha256="xyz", offset=0, length=1)
    with pytest.raises(ValidationError):
        ChunkGet(sha256="0" * 64, offset=0, length=(16 << 20) + 1)
    with pytest.raises(ValidationError):
        ChunkGet(sha256="0" * 64, offset=-1, length=1)


def test_chunks_spread_evenly_over_holders_within_the_window() -> None:
    plan = FetchPlanner(30, [A, B, C], PlanConfig(window_per_holder=2))
    first = plan.next(0.0)
    assert len(first) == 6
    assert sorted(f.index for f in first) == list(range(6))
    assert {f.holder: sum(1 for g in first if g.holder == f.holder) for f in first} == {A: 2, B: 2, C: 2}
    assert plan.next(0.0) == []  # every window is full
    for f in first:
        plan.on_ok(f.index, f.holder, 1)
    served = first + drain(plan)
    counts = {h: sum(1 for f in served if f.holder == h) for h in (A, B, C)}
    assert counts == {A: 10, B: 10, C: 10}
    assert sorted(f.index for f in served) == list(range(30))


def test_resume_skips_chunks_already_on_disk() -> None:
    plan = FetchPlanner(6, [A], have=frozenset({0, 2, 5}))
    served = drain(plan)
    assert sorted(f.index for f in served) == [1, 3, 4]
    assert plan.done


def test_resume_with_everything_present_is_done_without_requests() -> None:
    plan = FetchPlanner(3, [A], have=frozenset({0, 1, 2}))
    assert plan.done and plan.next(0.0) == []


def test_corrupt_chunk_is_refetched_from_another_holder() -> None:
    plan = FetchPlanner(2, [A, B], PlanConfig(window_per_holder=1))
    batch = plan.next(0.0)
    bad = next(f for f in batch if f.holder == A)
    plan.on_corrupt(bad.index, A)
    other = next(f for f in batch if f.holder == B)
    plan.on_ok(other.index, B, 1)
    retry = plan.next(0.0)
    assert retry == [Fetch(bad.index, B)]  # not A again, though A is idle
    plan.on_ok(bad.index, B, 1)
    assert plan.done and plan.failed is None


def test_corrupt_chunk_waits_for_a_busy_good_holder_rather_than_the_bad_one() -> None:
    plan = FetchPlanner(4, [A, B], PlanConfig(window_per_holder=1))
    a, b = sorted(plan.next(0.0), key=lambda f: f.holder)
    plan.on_corrupt(a.index, A)
    nxt = plan.next(0.0)
    assert nxt == [Fetch(2, A)]  # A gets fresh work; chunk a.index waits for B
    plan.on_ok(b.index, B, 1)
    assert plan.next(0.0) == [Fetch(a.index, B)]


def test_single_holder_corruption_is_retried_then_fails_after_the_attempt_limit() -> None:
    plan = FetchPlanner(1, [A], PlanConfig(max_chunk_attempts=3, holder_max_corrupt=10))
    for _ in range(2):
        (f,) = plan.next(0.0)
        plan.on_corrupt(f.index, A)
        assert plan.failed is None
    (f,) = plan.next(0.0)
    plan.on_corrupt(f.index, A)
    assert plan.failed is not None and "corrupt" in plan.failed
    assert plan.next(0.0) == []


def test_holder_serving_corrupt_chunks_is_dropped() -> None:
    plan = FetchPlanner(10, [A, B], PlanConfig(window_per_holder=5, holder_max_corrupt=2))
    batch = plan.next(0.0)
    for f in [f for f in batch if f.holder == A][:2]:
        plan.on_corrupt(f.index, A)
    assert plan.holders[A].dropped
    for f in [f for f in batch if f.holder == A][2:]:
        plan.on_ok(f.index, A, 1)  # answers already in flight still count
    for f in [f for f in batch if f.holder == B]:
        plan.on_ok(f.index, B, 1)
    assert all(f.holder == B for f in drain(plan))


def test_dead_holder_mid_transfer_does_not_fail_the_fetch() -> None:
    plan = FetchPlanner(20, [A, B], PlanConfig(window_per_holder=3, backoff_s=1.0, holder_max_failures=2))
    batch = plan.next(0.0)
    for f in batch:
        if f.holder == A:
            plan.on_error(f.index, A, 0.0)  # A died with 3 requests in flight: one failure period
        else:
            plan.on_ok(f.index, B, 1)
    assert plan.holders[A].failures == 1 and not plan.holders[A].dropped
    nxt = plan.next(0.5)
    assert nxt and all(f.holder == B for f in nxt)  # A backs off
    for f in nxt:
        plan.on_ok(f.index, B, 1)
    again = plan.next(1.5)  # A's back-off is over: it is tried once more, fails, and is dropped
    for f in again:
        if f.holder == A:
            plan.on_error(f.index, A, 1.5)
        else:
            plan.on_ok(f.index, B, 1)
    assert plan.holders[A].dropped
    assert all(f.holder == B for f in drain(plan, now=10.0))
    assert plan.done and plan.failed is None


def test_no_holder_left_fails_with_a_reason() -> None:
    plan = FetchPlanner(3, [A], PlanConfig(holder_max_failures=1))
    (f, *_) = plan.next(0.0)
    for g in [f, *_]:
        plan.on_error(g.index, A, 0.0)
    assert plan.next(5.0) == []
    assert plan.failed is not None and "no holder left" in plan.failed


def test_wake_at_names_the_end_of_a_back_off() -> None:
    plan = FetchPlanner(2, [A], PlanConfig(backoff_s=0.5, window_per_holder=1))
    (f,) = plan.next(10.0)
    plan.on_error(f.index, A, 10.0)
    assert plan.next(10.1) == []
    assert plan.wake_at() == 10.5
    assert plan.next(10.5) == [Fetch(f.index, A)]  # a retried chunk goes first


def test_outcome_for_a_request_not_in_flight_is_refused() -> None:
    plan = FetchPlanner(2, [A, B])
    with pytest.raises(ValueError, match="not in flight"):
        plan.on_ok(0, A, 1)


def test_blob_writer_hashes_whole_and_chunks_in_one_pass(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 41  # 10,496 bytes: 2 full 4 KiB chunks + a short one
    w = store.writer(4096)
    for i in range(0, len(data), 1000):  # pieces that straddle chunk boundaries
        w.write(data[i:i + 1000])
    digest, chunks = w.commit()
    assert digest == hashlib.sha256(data).hexdigest()
    assert chunks == [hashlib.sha256(data[i:i + 4096]).digest() for i in range(0, len(data), 4096)]
    assert store.get(digest) == data
    assert chunk_digests(store.path(digest), 4096) == chunks
    src = tmp_path / "src"
    src.write_bytes(data)
    assert store.put_file_chunked(src, 4096) == (digest, chunks)  # already stored: a no-op
    assert list((store.root / "tmp").iterdir()) == []
