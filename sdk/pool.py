"""A bounded pool of daemon worker threads for blocking block callbacks, awaited from asyncio.

Admission is all-or-nothing: at most `workers + queue_max` jobs are admitted; beyond that `submit`
raises Busy at once (never waits, never grows). Threads are daemons so a stuck callback cannot block
process exit after the drain deadline. It does not decide what runs: runner.py does.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sdk.errors import Busy

T = TypeVar("T")
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class WorkerPool:
    """`await pool.submit(fn)` runs fn() in a worker thread; raises Busy when the pool is full."""

    def __init__(self, workers: int, queue_max: int, name: str = "sdk-worker") -> None:
        if workers < 1 or queue_max < 0:
            raise ValueError("workers must be >= 1 and queue_max >= 0")
        self.workers = workers
        self.queue_max = queue_max
        self.capacity = workers + queue_max
        self.rejected = 0
        self._lock = threading.Lock()
        self._admitted = 0  # waiting + running
        self._running = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def admitted(self) -> int:
        """Jobs admitted and not finished (waiting + running)."""
        with self._lock:
            return self._admitted

    @property
    def waiting(self) -> int:
        """Jobs admitted and not yet started: the AIOS `queue_length`."""
        with self._lock:
            return self._admitted - self._running

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Admit fn and return a future for its result (call from the event loop).

        Raises:
            Busy: workers + queue_max jobs are already admitted, or the pool is closed.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed or self._admitted >= self.capacity:
                self.rejected += 1
                raise Busy(self.capacity)
            self._admitted += 1
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, fut))
        return fut

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, loop, fut = job
            with self._lock:
                self._running += 1
            try:
                result: Any = fn()
                exc: BaseException | None = None
            except BaseException as e:  # noqa: BLE001  # delivered to the awaiting coroutine, which owns the unit of work
                result, exc = None, e
            finally:
                with self._lock:
                    self._running -= 1
                    self._admitted -= 1
            try:
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:  # the loop closed while the job ran (shutdown after the drain deadline)
                pass

    def close(self) -> None:
        """Refuse new jobs and let idle workers exit (running jobs finish on their own; idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._jobs.put(None)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
