"""The task hot path's HTTP/1.1 client against real sockets: an aiohttp server (what the SDK runs)
and hand-written servers for the edge cases (chunked, no length, broken, stale keep-alive)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from runtime.spec import Endpoint
from runtime.taskconn import TaskPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return await r.readexactly(length)


async def test_against_aiohttp_keeps_connections_alive_and_bounds_replies(tmp_path: Path) -> None:
    async def echo(req: web.Request) -> web.Response:
        return web.Response(body=(await req.read()) * 2, content_type="application/msgpack")

    app = web.Application()
    app.router.add_post("/v1/task", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = tmp_path / "i.sock"
    await web.UnixSite(runner, str(sock)).start()
    try:
        pool = TaskPool(Endpoint(socket=sock), limit=4, max_reply=1000)
        for i in range(20):
            reply = await pool.post("/v1/task", b"ab" * i, "application/msgpack")
            assert reply.status == 200 and reply.body == b"ab" * i * 2
        assert len(pool._idle) == 1  # one connection served them all
        replies = await asyncio.gather(*(pool.post("/v1/task", b"x" * 400, "application/msgpack") for _ in range(8)))
        assert all(r.body == b"x" * 800 for r in replies) and len(pool._idle) <= 4
        with pytest.raises(aiohttp.ClientPayloadError, match="over the limit"):
            await pool.post("/v1/task", b"y" * 600, "application/msgpack")
        big = await pool.post("/v1/task", b"z" * 300, "application/msgpack")  # the pool still works
        assert big.body == b"z" * 600
        pool.close()
    finally:
        await runner.cleanup()


async def serve(tmp_path: Path, handler: Handler) -> tuple[asyncio.AbstractServer, Endpoint]:
    sock = tmp_path / "s.sock"
    server = await asyncio.start_unix_server(handler, str(sock))
    return server, Endpoint(socket=sock)


async def test_chunked_and_unframed_replies(tmp_path: Path) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        body = await read_request(r)
        if body == b"chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        else:
            w.write(b"HTTP/1.0 503 Busy\r\n\r\nbusy until the end")
            await w.drain()
            w.close()
            return
        await w.drain()
        await read_request(r)  # keep-alive: a second request on the same connection
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.close()

    server, ep = await serve(tmp_path, handler)
    async with server:
        pool = TaskPool(ep, limit=2, max_reply=1 << 20)
        assert (await pool.post("/v1/task", b"chunked", "x")).body == b"abcde"
        assert (await pool.post("/v1/task", b"again", "x")).body == b"ok"
        unframed = await pool.post("/v1/task", b"plain", "x")
        assert (unframed.status, unframed.body) == (503, b"busy until the end")
        pool.close()


async def test_stale_keepalive_is_retried_once_and_broken_replies_are_errors(tmp_path: Path) -> None:
    served = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        body = await read_request(r)
        served += 1
        if body == b"broken":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        elif body == b"garbage":
            w.write(b"SMTP ready\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.close()  # the server closes after every reply, without saying so: every idle connection goes stale

    server, ep = await serve(tmp_path, handler)
    async with server:
        pool = TaskPool(ep, limit=2, max_reply=1 << 20)
        assert (await pool.post("/v1/task", b"1", "x")).body == b"ok"
        assert (await pool.post("/v1/task", b"2", "x")).body == b"ok"  # stale connection: retried on a fresh one
        assert served == 2
        with pytest.raises(aiohttp.ClientPayloadError, match="broke off"):
            await pool.post("/v1/task", b"broken", "x")
        with pytest.raises(aiohttp.ClientPayloadError, match="bad status line"):
            await pool.post("/v1/task", b"garbage", "x")
        pool.close()
    with pytest.raises(aiohttp.ClientConnectionError, match="cannot connect"):
        await TaskPool(ep, limit=1, max_reply=10).post("/v1/task", b"", "x")
