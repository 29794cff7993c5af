"""Plain-HTTP pieces of the p2p transport: raw answers sent from a file (sendfile), bodies read
with a size cap, and the pre-trust `open` request a joining node makes before it has a cert.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from aiohttp import web
from pydantic import BaseModel, ValidationError

from federation.certs import pack
from federation.errors import PeerUnreachable, RemoteProtocolError, RemoteRejected

OPEN_PATH = "/p2p/v1/open/{kind}"
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class FileRange:
    """A raw answer read straight from a file by the kernel (sendfile): `length` bytes of `file`
    at `offset`. The handler opens the file and makes sure the range lies inside it; the
    transport closes it once sent."""

    file: BinaryIO
    offset: int
    length: int


async def send_range(request: web.Request, r: FileRange) -> web.StreamResponse:
    """Answer with `r`'s bytes by sendfile (the kernel copies page cache to socket); a transport
    that cannot (TLS) gets them read in pieces."""
    with r.file:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = r.length
        await resp.prepare(request)
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("p2p raw answer: connection lost")
        try:
            await asyncio.get_running_loop().sendfile(transport, r.file, r.offset, r.length)
        except NotImplementedError:
            pos, end = r.offset, r.offset + r.length
            while pos < end:
                piece = await asyncio.to_thread(os.pread, r.file.fileno(), min(1 << 20, end - pos), pos)
                if not piece:
                    raise ConnectionResetError("p2p raw answer: the file is shorter than announced") from None
                await resp.write(piece)
                pos += len(piece)
        await resp.write_eof()
    return resp


async def read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """Read the whole body, but at most cap + 1 bytes (so the caller can tell "too large")."""
    buf = bytearray()
    while len(buf) <= cap:
        chunk = await stream.read(cap + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def request_open(
    addr: str, body: BaseModel, answer: type[M], *, timeout_s: float = 10.0, max_bytes: int = 64 * 1024
) -> M:
    """Pre-trust request from a node that has no cert yet (`aiosd join`): one-off connection.

    Raises:
        PeerUnreachable, RemoteRejected (text = the seed's sentence), RemoteProtocolError.
    """
    kind = getattr(body, "kind", None)
    if not isinstance(kind, str):
        raise TypeError("body: model has no kind")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.post(f"http://{addr}{OPEN_PATH.format(kind=kind)}", data=pack(body.model_dump())) as resp,
        ):
            data = await read_capped(resp.content, max_bytes)
            status = resp.status
    except TimeoutError as e:
        raise PeerUnreachable(addr, "timed out") from e
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as e:
        raise PeerUnreachable(addr, type(e).__name__) from e
    if status != 200:
        raise RemoteRejected(status, data[:500].decode("utf-8", "replace"))
    if len(data) > max_bytes:
        raise RemoteProtocolError(f"peer {addr}: answer larger than {max_bytes} bytes")
    try:
        return answer.model_validate(msgpack.unpackb(data, raw=False, use_list=False))
    except (ValidationError, ValueError, TypeError, msgpack.UnpackException) as e:
        raise RemoteProtocolError(f"peer {addr}: bad answer") from e


__all__ = ["OPEN_PATH", "FileRange", "read_capped", "request_open", "send_range"]
