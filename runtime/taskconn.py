"""The task hot path to an instance: keep-alive HTTP/1.1 connections on asyncio streams.

Why not aiohttp's client here (docs/architecture-notes.md, "task hot path"): every task crosses
this path, and aiohttp's ClientSession spends ~100-150 µs of Python per request on this CPU
(request/response objects, tracing hooks, cookie and redirect handling) against ~30 µs for
writing one request and parsing one status line and `Content-Length`. The instance side stays an
aiohttp server, health checks and everything else stay on aiohttp, and the protocol is plain
HTTP/1.1, so any HTTP tool can still talk to an instance.

Bounded everywhere: header lines and count, reply size, connections per instance. Errors are
aiohttp's client exceptions, so callers handle both paths alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp

from runtime.spec import Endpoint

MAX_HEADER_LINE = 8192
MAX_HEADERS = 64


@dataclass(frozen=True, slots=True)
class RawReply:
    status: int
    body: bytes


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class TaskPool:
    """Keep-alive connections to one instance endpoint, at most `limit` at once."""

    def __init__(self, ep: Endpoint, limit: int, max_reply: int) -> None:
        self.ep = ep
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(limit)
        self._max_reply = max_reply
        self._closed = False

    async def _open(self) -> _Conn:
        try:
            if self.ep.socket is not None:
                r, w = await asyncio.open_unix_connection(str(self.ep.socket), limit=1 << 20)
            else:
                r, w = await asyncio.open_connection("127.0.0.1", self.ep.port, limit=1 << 20)
        except OSError as e:
            raise aiohttp.ClientConnectionError(f"cannot connect to {self.ep.describe()}: {e}") from None
        return _Conn(r, w)

    async def post(self, path: str, body: bytes, content_type: str) -> RawReply:
        """One request; a reused connection the instance had already closed is retried once on a
        fresh one (nothing of the reply was read, so the task was not answered)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = await self._open()
            head = (f"POST {path} HTTP/1.1\r\nHost: instance\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            try:
                reply, keep = await self._exchange(conn, head, body)
            except _StaleConnection:
                conn.close()
                if not reused:
                    raise aiohttp.ServerDisconnectedError() from None
                conn = await self._open()
                try:
                    reply, keep = await self._exchange(conn, head, body)
                except _StaleConnection:
                    conn.close()
                    raise aiohttp.ServerDisconnectedError() from None
                except BaseException:
                    conn.close()
                    raise
            except BaseException:  # a cancelled or failed exchange leaves the stream mid-message
                conn.close()
                raise
            if keep and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()
            return reply

    async def _exchange(self, conn: _Conn, head: bytes, body: bytes) -> tuple[RawReply, bool]:
        w, r = conn.writer, conn.reader
        try:
            w.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                w.write(body)
            await w.drain()
            status_line = await r.readline()
        except (ConnectionError, OSError) as e:
            raise _StaleConnection() from e
        if not status_line:
            raise _StaleConnection()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise aiohttp.ClientPayloadError(f"{self.ep.describe()} answered a bad status line {status_line[:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        try:
            for _ in range(MAX_HEADERS + 1):
                line = await r.readuntil(b"\n")
                if line in (b"\r\n", b"\n"):
                    break
                if len(line) > MAX_HEADER_LINE:
                    raise aiohttp.ClientPayloadError("reply header line too long")
                name, _, value = line.partition(b":")
                key = name.strip().lower()
                if key == b"content-length":
                    length = int(value.strip())
                elif key == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif key == b"connection":
                    keep = value.strip().lower() == b"keep-alive" or (keep and value.strip().lower() != b"close")
            else:
                raise aiohttp.ClientPayloadError("reply has too many header lines")
            if chunked:
                data = await self._chunked(r)
            elif length is not None:
                if length > self._max_reply:
                    raise aiohttp.ClientPayloadError(f"reply of {length} bytes is over the limit")
                data = await r.readexactly(length)
            else:  # no length: the body runs to the end of the connection
                data = await r.read(self._max_reply + 1)
                keep = False
                if len(data) > self._max_reply:
                    raise aiohttp.ClientPayloadError("reply is over the limit")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as e:
            raise aiohttp.ClientPayloadError(f"reply from {self.ep.describe()} broke off: {e!r}") from None
        return RawReply(status, data), keep

    async def _chunked(self, r: asyncio.StreamReader) -> bytes:
        out = bytearray()
        while True:
            size = int((await r.readuntil(b"\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await r.readuntil(b"\n")) not in (b"\r\n", b"\n"):  # trailers
                    pass
                return bytes(out)
            if len(out) + size > self._max_reply:
                raise aiohttp.ClientPayloadError("reply is over the limit")
            out += await r.readexactly(size)
            await r.readexactly(2)

    def close(self) -> None:
        self._closed = True
        for c in self._idle:
            c.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """The connection ended before any byte of the reply arrived."""


__all__ = ["RawReply", "TaskPool"]
