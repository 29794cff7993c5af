"""The p2p WebSocket channel's client side and its frames: one outbound connection per peer that
carries many signed requests at once (answers matched by `re`, the request nonce), and the
unsigned error frame `["err", re, status, reason]` both sides use for refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from aiohttp import web

from federation.certs import MSGPACK_ERRORS, pack
from federation.envelope import EnvelopeVerifier, Verified
from federation.errors import AuthError, PeerUnreachable, RemoteProtocolError, RemoteRejected


class WsPeer:
    """One outbound WebSocket to a peer: answers are matched to callers by `re` (request nonce)."""

    def __init__(self, addr: str, ws: aiohttp.ClientWebSocketResponse, verifier: EnvelopeVerifier,
                 clock: Callable[[], float], counters: Counter[str], max_pending: int,
                 on_closed: Callable[[WsPeer], None]) -> None:
        self.addr, self.ws = addr, ws
        self.verifier, self.clock, self.counters, self.on_closed = verifier, clock, counters, on_closed
        self.pending: dict[bytes, asyncio.Future[Verified]] = {}
        self.slots = asyncio.Semaphore(max_pending)
        self.reader = asyncio.create_task(self._read(), name=f"p2p-ws-{addr}")

    @property
    def closed(self) -> bool:
        return self.ws.closed or self.reader.done()

    async def call(self, raw: bytes, nonce: bytes) -> Verified:
        async with self.slots:
            if self.closed:
                raise PeerUnreachable(self.addr, "connection closed")
            fut: asyncio.Future[Verified] = asyncio.get_running_loop().create_future()
            self.pending[nonce] = fut
            try:
                await self.ws.send_bytes(raw)
                return await fut
            finally:
                self.pending.pop(nonce, None)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    break
                self._on_answer(msg.data)
        finally:
            err = PeerUnreachable(self.addr, "connection closed")
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self.on_closed(self)

    def _on_answer(self, data: bytes) -> None:
        err = parse_err(data)
        if err is not None:
            re, status, reason = err
            fut = self.pending.get(re) if re is not None else None
            if fut is not None and not fut.done():
                fut.set_exception(RemoteRejected(status, reason))
            return
        try:
            v = self.verifier.open(data, self.clock(), source=self.addr)
        except AuthError as e:
            re = peek_re(data)
            fut = self.pending.get(re) if re is not None else None
            if fut is not None and not fut.done():
                fut.set_exception(RemoteProtocolError(f"peer {self.addr}: answer refused: {e}"))
            return
        fut = self.pending.get(v.re) if v.re is not None else None
        if fut is not None and not fut.done():
            fut.set_result(v)
        else:
            self.counters["answers_unmatched"] += 1

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def send_err(ws: web.WebSocketResponse, re: bytes | None, status: int, reason: str) -> None:
    """Error frame ["err", re, status, reason]: unsigned, so only ever a refusal, never data."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_bytes(pack(["err", re, status, reason[:200]]))


def parse_err(data: bytes) -> tuple[bytes | None, int, str] | None:
    if not data.startswith(b"\x94\xa3err"):
        return None
    try:
        _, re, status, reason = msgpack.unpackb(data, raw=False, use_list=False)
    except MSGPACK_ERRORS:
        return None
    if (
        not (re is None or isinstance(re, bytes))
        or not isinstance(status, int)
        or not isinstance(reason, str)
    ):
        return None
    return re, status, reason


def peek_nonce(raw: bytes) -> bytes | None:
    """The nonce of an envelope that failed verification (to address the error reply), if readable."""
    return _peek(raw, "nonce")


def peek_re(raw: bytes) -> bytes | None:
    return _peek(raw, "re")


def _peek(raw: bytes, field: str) -> bytes | None:
    try:
        inner = msgpack.unpackb(msgpack.unpackb(raw, raw=False, use_list=False)[0], raw=False, use_list=False)
        value = inner.get(field)
    except MSGPACK_ERRORS:
        return None
    except (IndexError, KeyError, AttributeError):
        return None
    return value if isinstance(value, bytes) and len(value) <= 32 else None


__all__ = ["WsPeer", "parse_err", "peek_nonce", "peek_re", "send_err"]
