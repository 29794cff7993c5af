"""Cost of the RFC 6455 mask check (federation/ws_mask.py) on the p2p WebSocket, against aiohttp's
own frame reader over the same bytes in the same run (the baseline: what every frame costs anyway).

Frames of --small bytes (a request) and --large bytes (an asset chunk), masked, fed in 64 KiB
chunks. Prints µs per frame for each and the ratio check / reader.
Run: .venv/bin/python bench/ws_mask.py [--frames 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader  # after sys.path

from federation.ws_mask import MaskCheck


def frame(n: int) -> bytes:
    key = os.urandom(4)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 65536:
        head = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + os.urandom(n)


class _Proto:
    _reading_paused = False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def run(size: int, frames: int) -> tuple[float, float]:
    stream = frame(size) * frames
    chunks = [stream[i:i + 65536] for i in range(0, len(stream), 65536)]
    t = time.perf_counter()
    m = MaskCheck()
    for c in chunks:
        m.feed(c)
    check = time.perf_counter() - t
    queue = WebSocketDataQueue(_Proto(), 1 << 30, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 1 << 30, False, False)
    t = time.perf_counter()
    for c in chunks:
        reader.feed_data(c)
    base = time.perf_counter() - t
    return check / frames * 1e6, base / frames * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=1 << 20)
    a = ap.parse_args()
    for size, n in ((a.small, a.frames), (a.large, max(10, a.frames // 500))):
        check, base = asyncio.run(run(size, n))
        print(f"frame {size} B x {n}: mask check {check:.2f} us/frame, aiohttp reader {base:.2f} us/frame, "
              f"ratio {check / base:.3f}")


if __name__ == "__main__":
    main()
