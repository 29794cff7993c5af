"""Session handshakes over the p2p WebSocket, both sides, and the pre-trust `request_open`.

The client sends m1, reads m2, sends m3 (federation/sessions/handshake.py) and then owns a Link;
the server answers within `timeout_s` or closes with 4000 + status and the reason. A joiner
without a cert runs the same handshake anonymously: it checks the seed's CA against the token
(fingerprint pin, or the network id its request names) before anything of its own is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import TypeVar

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ValidationError

from federation.errors import (
    PeerUnreachable,
    RemoteProtocolError,
    RemoteRejected,
    SessionError,
    SessionReason,
)
from federation.sessions.frames import OVERHEAD, FrameLimits
from federation.sessions.handshake import ClientHandshake, ServerHandshake, Session
from federation.sessions.messages import PREFIX_BYTES, Message, MsgType
from federation.sessions.stats import SessionStats
from federation.transport_link import CLOSE_BASE, Link, refusal_of

WS_PATH = "/p2p/v2/session"
M = TypeVar("M", bound=BaseModel)


def close_code_of(reason: str) -> int:
    """4400 + something: what the peer sees when we refuse its handshake."""
    status = {"timeout": 408, "rate_limited": 429, "busy": 503, "malformed": 400, "too_large": 413,
              "bad_version": 400, "truncated": 400, "unexpected": 400}.get(reason, 401)
    return CLOSE_BASE + status


async def client_handshake(ws: aiohttp.ClientWebSocketResponse, hs: ClientHandshake, addr: str,
                           clock: Callable[[], float], stats: SessionStats) -> Session:
    """Run the client side on an open WebSocket (the caller bounds it with a deadline).

    Raises:
        RemoteRejected: the server refused (its close code and reason).
        RemoteProtocolError: the server's answer failed a check (counted by reason).
        PeerUnreachable: the connection closed halfway.
    """
    try:
        await ws.send_bytes(hs.m1)
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.CLOSE:
            refusal = refusal_of(msg.data, msg.extra)
            if refusal is not None:
                raise refusal
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise PeerUnreachable(addr, "closed during the handshake")
        m3, session = hs.on_m2(msg.data, clock())
        await ws.send_bytes(m3)
    except SessionError as e:
        stats.handshake_failures[e.reason.value] += 1
        with contextlib.suppress(Exception):
            await ws.close(code=close_code_of(e.reason.value), message=e.reason.value.encode())
        raise RemoteProtocolError(f"peer {addr}: session refused: {e}") from None
    stats.handshakes_ok += 1
    return session


async def server_handshake(ws: web.WebSocketResponse, hs: ServerHandshake, clock: Callable[[], float]
                           ) -> Session:
    """Run the server side (the caller bounds it with a deadline and counts failures).

    Raises:
        SessionError: a check failed, or the client closed or sent a non-binary message.
    """
    m1 = _binary(await ws.receive(), "m1")
    await ws.send_bytes(hs.on_m1(m1))
    return hs.on_m3(_binary(await ws.receive(), "m3"), clock())


def _binary(msg: aiohttp.WSMessage, what: str) -> bytes:
    if msg.type is aiohttp.WSMsgType.BINARY:
        return bytes(msg.data)
    if msg.type is aiohttp.WSMsgType.ERROR:  # aiohttp refused a message over max_msg_size unread
        raise SessionError(SessionReason.TOO_LARGE, f"{what}: over the frame cap")
    raise SessionError(SessionReason.TRUNCATED, f"closed before {what}")


def frame_cap(max_body_bytes: int) -> int:
    """The largest frame (and WebSocket message) a link accepts for bodies of max_body_bytes."""
    return max_body_bytes + OVERHEAD + PREFIX_BYTES + 1024


async def open_call(link: Link, body: BaseModel, answer: type[M]) -> M:
    """An OPEN (pre-trust route) request over `link`, its answer validated as `answer`."""
    kind = getattr(body, "kind", None)
    if not isinstance(kind, str):
        raise TypeError("body: model has no kind")
    got = await link.call(MsgType.OPEN, kind, body)
    if not isinstance(got, Message):
        raise RemoteProtocolError(f"peer {link.addr}: bad answer")
    try:
        return answer.model_validate(got.body)
    except (ValidationError, ValueError, TypeError) as e:
        raise RemoteProtocolError(f"peer {link.addr}: bad answer") from e


async def request_open(
    addr: str, body: BaseModel, answer: type[M], *, timeout_s: float = 10.0, max_bytes: int = 64 * 1024,
    pin: str | None = None, network_id: str | None = None,
) -> M:
    """Pre-trust request from a node that has no cert yet (`aiosd join`), over an anonymous session.

    The seed's certificate must chain to the CA pinned by `pin` (the token's CA fingerprint) or
    to the network `network_id`; when neither is given and `body` names a `network_id` (a join
    request does), that one is required, so the proof is only ever sealed for that network.

    Raises:
        PeerUnreachable, RemoteRejected (text = the seed's sentence), RemoteProtocolError.
    """
    if network_id is None and pin is None:
        named = getattr(body, "network_id", None)
        network_id = named if isinstance(named, str) else None
    hs = ClientHandshake(os.urandom, me=None, pin=pin, network_id=network_id,
                         limits=FrameLimits(max_frame_bytes=frame_cap(max_bytes)))
    stats = SessionStats()
    try:
        async with (
            asyncio.timeout(timeout_s),
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://{addr}{WS_PATH}", max_msg_size=frame_cap(max_bytes), compress=0) as ws,
        ):
            session = await client_handshake(ws, hs, addr, time.time, stats)
            link = Link(ws, session, addr, stats, clock=time.time, revoked=frozenset(), on_request=None,
                        max_pending=4)
            reader = asyncio.create_task(link.run())
            try:
                return await open_call(link, body, answer)
            finally:
                await link.close(aiohttp.WSCloseCode.OK)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
    except TimeoutError as e:
        raise PeerUnreachable(addr, "timed out") from e
    except RemoteRejected:
        raise
    except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError, OSError) as e:
        raise PeerUnreachable(addr, type(e).__name__) from e


__all__ = ["WS_PATH", "client_handshake", "close_code_of", "frame_cap", "open_call", "request_open",
           "server_handshake"]
