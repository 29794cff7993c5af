"""Batcher helpers a block uses inside on_data to group items (AIOS `Batcher(N)`, `TimeBasedBatcher(N, T)`).

Manual helpers: the block calls add() and gets a full batch back, or None ("hold back"). No threads and no
clock reads of their own: TimeBasedBatcher takes an injectable clock, and a due batch is only returned from
add()/poll(), never pushed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Collects items; `add` returns the batch when it reaches `batch_size`, else None."""

    def __init__(self, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._items: list[T] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, item: T) -> list[T] | None:
        """Add one item; the full batch (and a fresh start) when it reached batch_size."""
        with self._lock:
            self._items.append(item)
            if len(self._items) >= self.batch_size:
                return self._take()
            return None

    def flush(self) -> list[T]:
        """Take whatever is collected (possibly empty)."""
        with self._lock:
            return self._take()

    def _take(self) -> list[T]:
        items, self._items = self._items, []
        return items


class TimeBasedBatcher(Batcher[T]):
    """A Batcher that also releases a partial batch once its oldest item waited `timeout_s`."""

    def __init__(self, batch_size: int, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(batch_size)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s: must be > 0, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self._clock = clock
        self._oldest: float | None = None

    def add(self, item: T) -> list[T] | None:
        """Add one item; a batch when full or when the oldest item is due."""
        now = self._clock()
        with self._lock:
            if not self._items:
                self._oldest = now
            self._items.append(item)
            if len(self._items) >= self.batch_size or self._due(now):
                return self._take()
            return None

    def poll(self) -> list[T] | None:
        """The partial batch if its oldest item is due, else None (call it from a periodic hook)."""
        now = self._clock()
        with self._lock:
            if self._items and self._due(now):
                return self._take()
            return None

    def time_left(self) -> float | None:
        """Seconds until the pending batch is due (None when empty)."""
        with self._lock:
            if self._oldest is None or not self._items:
                return None
            return max(0.0, self._oldest + self.timeout_s - self._clock())

    def _due(self, now: float) -> bool:
        return self._oldest is not None and now - self._oldest >= self.timeout_s

    def _take(self) -> list[T]:
        self._oldest = None
        return super()._take()
