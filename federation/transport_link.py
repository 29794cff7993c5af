"""One p2p link: a WebSocket that carries one established session (the driver of sessions/).

Every WebSocket message after the handshake is one AEAD frame (federation/sessions/frames.py).
Both ends use the same class: calls made on the link wait for their answer by call id; messages
that are requests go to `on_request` (the transport's server side). A frame that fails any
check is counted by reason and the link is closed: a session never skips a bad frame. Refusals
of the handshake arrive as a WebSocket close code 4000 + status with the reason as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from federation.certs import NodeCert, check_cert_state
from federation.errors import (
    AuthError,
    PeerUnreachable,
    RemoteProtocolError,
    RemoteRejected,
    SessionError,
    SessionReason,
)
from federation.sansio import NodeId
from federation.sessions.handshake import Session
from federation.sessions.messages import (
    MAX_CALL_ID,
    Message,
    MsgType,
    decode,
    encode,
    encode_ack,
    encode_data,
    encode_err,
)
from federation.sessions.stats import SessionStats

log = logging.getLogger(__name__)

WS = aiohttp.ClientWebSocketResponse | web.WebSocketResponse
CLOSE_BASE = 4000  # close code = CLOSE_BASE + HTTP-like status (4401: a check failed)
_ANSWERS = frozenset({MsgType.ANS, MsgType.ERR, MsgType.ACK, MsgType.DATA, MsgType.DATA_END})


@dataclass(slots=True)
class _Call:
    fut: asyncio.Future[Message | bytes | bytearray]
    raw_cap: int | None = None  # a RAW call: DATA pieces gather here up to this many bytes
    buf: bytearray = field(default_factory=bytearray)  # allocated at raw_cap by the first piece
    n: int = 0  # bytes of buf filled
    failed: bool = False


class Link:
    """A session over one WebSocket; `run()` reads until the link closes."""

    def __init__(self, ws: WS, session: Session, addr: str, stats: SessionStats, *,
                 clock: Callable[[], float], revoked: Container[str],
                 on_request: Callable[[Link, Message], None] | None, max_pending: int,
                 cert_gen: int = 0) -> None:
        self.ws, self.session, self.addr, self.stats = ws, session, addr, stats
        self.clock, self.revoked, self.on_request = clock, revoked, on_request
        self.cert_gen = cert_gen
        self.calls: dict[int, _Call] = {}
        self.slots = asyncio.Semaphore(max_pending)
        self.tasks: set[asyncio.Task[None]] = set()  # this link's request handlers
        self.close_reason: str | None = None
        self.remote_refusal: RemoteRejected | None = None
        self.unmatched = 0
        self._next = 0
        stats.sessions_opened += 1

    @property
    def peer(self) -> NodeCert | None:
        return self.session.peer

    @property
    def peer_id(self) -> NodeId | None:
        return self.session.peer_id

    @property
    def closed(self) -> bool:
        return self.ws.closed or self.close_reason is not None

    # -- sending (seal and write with no await between: counters leave in order) ------------
    async def send_plain(self, plain: bytes) -> None:
        frame = self.session.sealer.seal(plain, self.clock())
        self.stats.frames_out += 1
        await self.ws.send_bytes(frame)  # type: ignore[arg-type]  # aiohttp takes bytearray too (checked at run time)

    async def reply(self, call: int, kind: str, body: BaseModel) -> None:
        await self.send_plain(encode(MsgType.ANS, call, kind, body))

    async def reply_err(self, call: int, status: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send_plain(encode_err(call, status, reason))

    async def reply_ack(self, call: int) -> None:
        await self.send_plain(encode_ack(call))

    async def reply_data(self, call: int, data: bytes, *, last: bool) -> None:
        await self.send_plain(encode_data(call, data, last=last))

    async def send_frame_buffer(self, buf: bytearray) -> None:
        """Seal a buffer laid out by data_frame_buffer in place and send it (bulk: no copy)."""
        frame = self.session.sealer.seal_in_place(buf, self.clock())
        self.stats.frames_out += 1
        await self.ws.send_bytes(frame)  # type: ignore[arg-type]  # aiohttp takes bytearray too

    def _call_id(self) -> int:
        self._next = self._next + 1 if self._next < MAX_CALL_ID else 1
        return self._next

    async def call(self, type_: MsgType, kind: str, body: BaseModel, *, raw_cap: int | None = None
                   ) -> Message | bytes | bytearray:
        """Send one request and wait for its answer (a Message; bytes for RAW).

        Raises:
            PeerUnreachable (link closed), RemoteRejected (ERR answer / refused handshake),
            RemoteProtocolError (answer larger than raw_cap).
        """
        async with self.slots:
            self._raise_if_closed()
            call = self._call_id()
            entry = _Call(asyncio.get_running_loop().create_future(), raw_cap)
            self.calls[call] = entry
            try:
                await self.send_plain(encode(type_, call, kind, body))
                return await entry.fut
            finally:
                if not entry.failed:  # an overflowed raw call stays to swallow its last pieces
                    self.calls.pop(call, None)

    async def notify(self, kind: str, body: BaseModel) -> None:
        """A one-way message with no answer."""
        self._raise_if_closed()
        await self.send_plain(encode(MsgType.ONEWAY, 0, kind, body))

    def _raise_if_closed(self) -> None:
        if self.remote_refusal is not None:
            raise self.remote_refusal
        if self.closed:
            raise PeerUnreachable(self.addr, "connection closed")

    # -- receiving ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Read frames until the link closes; then fail what still waits."""
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    if self._on_frame(msg.data):
                        continue
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    self.remote_refusal = refusal_of(msg.data, msg.extra)
                elif msg.type is aiohttp.WSMsgType.ERROR:  # e.g. over max_msg_size (not buffered)
                    self._drop(SessionReason.TOO_LARGE)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    self._drop(SessionReason.MALFORMED)
                break
        finally:
            await self._finish()

    def _on_frame(self, data: bytes) -> bool:
        s = self.session
        try:
            plain = s.opener.open(data, self.clock())
        except SessionError as e:
            self._drop(e.reason.value)
            return False
        self.stats.frames_in += 1
        if s.peer is not None:
            try:
                check_cert_state(s.peer, self.clock(), self.revoked)
            except AuthError:
                self._drop(SessionReason.PEER_CERT)
                return False
        try:
            m = decode(plain)
        except AuthError as e:
            self._drop(e.reason.value)
            return False
        if m.type in _ANSWERS:
            self._on_answer(m)
        elif self.on_request is not None:
            self.on_request(self, m)
        else:
            self._drop(SessionReason.UNEXPECTED)
            return False
        return True

    def _on_answer(self, m: Message) -> None:
        entry = self.calls.get(m.call)
        if entry is None:
            self.unmatched += 1
            return
        if m.type is MsgType.ERR:
            self._settle(m.call, entry, RemoteRejected(m.status, m.reason))
        elif m.type in (MsgType.DATA, MsgType.DATA_END):
            if entry.raw_cap is None:
                self._settle(m.call, entry, RemoteProtocolError(f"peer {self.addr}: data for a non-raw call"))
                return
            if not entry.failed:
                end = entry.n + len(m.data)
                if end > entry.raw_cap:
                    entry.failed = True  # swallow the rest of its pieces, then forget it
                    if not entry.fut.done():
                        entry.fut.set_exception(
                            RemoteProtocolError(f"peer {self.addr}: answer larger than {entry.raw_cap} bytes"))
                    entry.buf = bytearray()
                else:
                    if not entry.buf:
                        entry.buf = bytearray(entry.raw_cap)
                    entry.buf[entry.n:end] = m.data  # the one copy out of the decrypted frame
                    entry.n = end
            if m.type is MsgType.DATA_END:
                if entry.failed:
                    self.calls.pop(m.call, None)
                    return
                buf = entry.buf
                self._settle(m.call, entry, buf if entry.n == len(buf) else bytes(memoryview(buf)[:entry.n]))
        elif entry.raw_cap is None:
            self._settle(m.call, entry, m)
        else:
            self._settle(m.call, entry, RemoteProtocolError(f"peer {self.addr}: not a data answer"))

    def _settle(self, call: int, entry: _Call, value: Message | bytes | bytearray | Exception) -> None:
        self.calls.pop(call, None)
        if entry.fut.done():
            return
        if isinstance(value, Exception):
            entry.fut.set_exception(value)
        else:
            entry.fut.set_result(value)

    def _drop(self, reason: str) -> None:
        self.stats.frames_dropped[reason] += 1
        self.close_reason = reason
        log.debug("p2p frame dropped, link closed", extra={"peer": self.peer_id, "reason": reason})

    async def _finish(self) -> None:
        if self.close_reason is None:
            self.close_reason = "closed"
        err: Exception = self.remote_refusal or PeerUnreachable(self.addr, "connection closed")
        for entry in list(self.calls.values()):
            if not entry.fut.done():
                entry.fut.set_exception(err)
        self.calls.clear()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.stats.sessions_closed += 1
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def close(self, code: int = aiohttp.WSCloseCode.GOING_AWAY, reason: str = "") -> None:
        if self.close_reason is None:
            self.close_reason = reason or "closed"
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode())


def refusal_of(code: object, reason: object) -> RemoteRejected | None:
    """The refusal a close code 4400..4599 carries (None for an ordinary close)."""
    if isinstance(code, int) and CLOSE_BASE + 400 <= code < CLOSE_BASE + 600:
        return RemoteRejected(code - CLOSE_BASE, str(reason or "") or "refused")
    return None


__all__ = ["CLOSE_BASE", "WS", "Link", "refusal_of"]
