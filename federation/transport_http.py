"""Plain pieces the p2p transport shares: a raw answer read from a file, and capped body reads.

(The plaintext HTTP routes of the v1 wire are gone: every p2p byte now rides a session.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import aiohttp


@dataclass(frozen=True, slots=True)
class FileRange:
    """A raw answer read from a file: `length` bytes of `file` at `offset`. The handler opens the
    file and makes sure the range lies inside it; the transport reads it in pieces, seals each
    piece in its own frame, and closes the file once sent."""

    file: BinaryIO
    offset: int
    length: int


async def read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """Read the whole body, but at most cap + 1 bytes (so the caller can tell "too large")."""
    buf = bytearray()
    while len(buf) <= cap:
        chunk = await stream.read(cap + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


__all__ = ["FileRange", "read_capped"]
