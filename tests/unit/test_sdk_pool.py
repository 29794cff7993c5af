"""WorkerPool: bounded admission (Busy at once when full), results and errors back on the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sdk import Busy
from sdk.pool import WorkerPool
from tests.waiting import eventually


async def test_admits_workers_plus_queue_then_refuses_at_once() -> None:
    pool = WorkerPool(2, 1)
    gate = threading.Event()
    try:
        futs = [pool.submit(gate.wait) for _ in range(3)]

        def two_running() -> bool:
            return pool.waiting == 1 and pool.admitted == 3

        await eventually(two_running, timeout_s=5)
        with pytest.raises(Busy) as e:
            pool.submit(lambda: None)
        assert e.value.capacity == 3 and pool.rejected == 1
        gate.set()
        assert await asyncio.wait_for(asyncio.gather(*futs), 5) == [True, True, True]
        assert pool.admitted == 0 and pool.waiting == 0
        assert await pool.submit(lambda: 7) == 7  # room again
    finally:
        gate.set()
        pool.close()


async def test_exceptions_reach_the_awaiting_coroutine_and_the_worker_survives() -> None:
    pool = WorkerPool(1, 0)
    try:
        def boom() -> None:
            raise KeyError("k")

        with pytest.raises(KeyError):
            await pool.submit(boom)
        assert await pool.submit(lambda: "still here") == "still here"
    finally:
        pool.close()


async def test_closed_pool_refuses_and_close_is_idempotent() -> None:
    pool = WorkerPool(1, 4)
    pool.close()
    pool.close()
    with pytest.raises(Busy):
        pool.submit(lambda: None)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        WorkerPool(0, 1)
    with pytest.raises(ValueError):
        WorkerPool(1, -1)
