"""HTTP client for instance endpoints: tasks over taskconn.py's keep-alive connections (the hot
path), everything else over one aiohttp session per instance socket.

Speaks the instance contract (POST /v1/task msgpack, GET /health); knows nothing of
which instance to pick (that is balancer.py) or when to restart (supervisor.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Self

import aiohttp

from runtime.spec import Endpoint
from runtime.taskconn import RawReply, TaskPool

log = logging.getLogger(__name__)

MAX_SESSIONS = 1024  # instances one node talks to at once; older sessions are closed (LRU)
CONNECTIONS_PER_INSTANCE = 64  # concurrent requests per instance; the SDK's queue bounds the rest
MAX_REPLY_BYTES = 256 << 20  # a reply larger than this is refused (bounds daemon memory)


class InstanceClient:
    """Pool of aiohttp sessions keyed by endpoint. Use as an async context manager."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._sessions: OrderedDict[Endpoint, aiohttp.ClientSession] = OrderedDict()
        self._pools: OrderedDict[Endpoint, TaskPool] = OrderedDict()
        self._max = max_sessions
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for s in sessions:
            await s.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _session(self, ep: Endpoint) -> aiohttp.ClientSession:
        s = self._sessions.get(ep)
        if s is not None:
            self._sessions.move_to_end(ep)
            return s
        if self._closed:
            raise RuntimeError("InstanceClient is closed")
        if ep.socket is not None:
            conn: aiohttp.BaseConnector = aiohttp.UnixConnector(path=str(ep.socket),
                                                                  limit=CONNECTIONS_PER_INSTANCE)
        else:
            conn = aiohttp.TCPConnector(limit=CONNECTIONS_PER_INSTANCE)
        s = aiohttp.ClientSession(connector=conn, auto_decompress=False, skip_auto_headers=("User-Agent",))
        self._sessions[ep] = s
        while len(self._sessions) > self._max:
            _, old = self._sessions.popitem(last=False)
            self._spawn_close(old)
        return s

    def _spawn_close(self, s: aiohttp.ClientSession) -> None:
        t = asyncio.get_running_loop().create_task(s.close())
        self._closing.add(t)
        t.add_done_callback(self._closing.discard)

    def forget(self, ep: Endpoint) -> None:
        """Close the session of an endpoint that went away (its socket will be a new one)."""
        s = self._sessions.pop(ep, None)
        if s is not None:
            self._spawn_close(s)
        pool = self._pools.pop(ep, None)
        if pool is not None:
            pool.close()

    @staticmethod
    def _url(ep: Endpoint, path: str) -> str:
        return f"http://localhost{path}" if ep.socket is not None else f"http://127.0.0.1:{ep.port}{path}"

    def _pool(self, ep: Endpoint) -> TaskPool:
        pool = self._pools.get(ep)
        if pool is not None:
            self._pools.move_to_end(ep)
            return pool
        if self._closed:
            raise RuntimeError("InstanceClient is closed")
        pool = self._pools[ep] = TaskPool(ep, CONNECTIONS_PER_INSTANCE, MAX_REPLY_BYTES)
        while len(self._pools) > self._max:
            self._pools.popitem(last=False)[1].close()
        return pool

    async def task(self, ep: Endpoint, body: bytes, timeout_s: float) -> RawReply:
        """POST /v1/task. Raises aiohttp.ClientError / TimeoutError on transport failure."""
        async with asyncio.timeout(timeout_s):
            return await self._pool(ep).post("/v1/task", body, "application/msgpack")

    async def health(self, ep: Endpoint, timeout_s: float) -> bool:
        """GET /health → True on 200; False on any other answer or transport failure."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session(ep).get(self._url(ep, "/health")) as r:
                    await r.read()
                    return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
