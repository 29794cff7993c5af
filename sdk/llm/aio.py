"""asyncio side of a generation: await deltas from the engine thread without a thread per stream.

For an HTTP endpoint (SSE): `async for ev in stream_events(lambda notify: block.submit(task, notify))`.
Leaving the loop early (the client went away) cancels the request, which frees its KV-cache slot.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncGenerator, Callable

from sdk.llm.generation import Completion, Delta, Failed, Generation


async def stream_events(submit: Callable[[Callable[[], None]], Generation],
                        timeout_s: float = 300.0) -> AsyncGenerator[Delta | Completion, None]:
    """Yield each Delta, then the Completion; raise the engine's error for a failed request.

    `submit(notify)` must queue the request with `notify` as its wake-up callback (engine.submit's
    `notify=`); it is called from the engine thread.

    Raises:
        LlmError: the engine failed the request. TimeoutError: no event for timeout_s seconds.
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def notify() -> None:  # engine thread
        loop.call_soon_threadsafe(wake.set)

    handle = submit(notify)
    try:
        while True:
            try:
                ev = handle.next_event(0)
            except queue.Empty:
                wake.clear()
                try:  # an event may have landed between the first look and clear()
                    ev = handle.next_event(0)
                except queue.Empty:
                    await asyncio.wait_for(wake.wait(), timeout_s)
                    continue
            if isinstance(ev, Failed):
                raise ev.error
            yield ev
            if isinstance(ev, Completion):
                return
    finally:
        handle.cancel()  # no-op when it already finished
