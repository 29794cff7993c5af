"""Wait for a condition with a deadline (integration tests never sleep a fixed time)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Any], *, timeout_s: float = 5.0, interval_s: float = 0.02
) -> Any:
    """Call `check` until it returns a truthy value (or stops raising AssertionError); return it."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_s}s") from last
        await asyncio.sleep(interval_s)


def wait_sync(check: Callable[[], T], *, timeout_s: float = 5.0, interval_s: float = 0.02) -> T:
    """Blocking variant for subprocess-driven tests."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_s}s") from last
        time.sleep(interval_s)
