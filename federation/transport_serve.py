"""The serving half of the transport: routes, and what an inbound message on a link turns into.

A message that reached here came out of an authenticated frame, so the sender is the session's
peer; the body is decoded against the schema registry (unknown_kind / bad_body, counted in the
verifier's counters as before), then handed to its handler as a `Verified`. Bounded: in-flight
handlers (503), the one-way queue (503 / drop), handler tasks per link (overrun closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from federation.certs import first_error
from federation.envelope import Verified
from federation.errors import AuthError, AuthReason, FederationError, RemoteProtocolError
from federation.sansio import NodeId
from federation.sessions.frames import HEADER_BYTES, TAG_BYTES
from federation.sessions.messages import PREFIX_BYTES, Message, MsgType, data_frame_buffer, decode_body
from federation.transport_http import FileRange
from federation.transport_link import Link

if TYPE_CHECKING:
    from federation.transport import OneWayHandler, RawHandler, RequestHandler, Transport

log = logging.getLogger(__name__)

STATUS: dict[AuthReason, int] = {
    AuthReason.TOO_LARGE: 413,
    AuthReason.MALFORMED: 400,
    AuthReason.UNSUPPORTED_VERSION: 400,
    AuthReason.UNKNOWN_KIND: 404,
    AuthReason.BAD_BODY: 422,
    AuthReason.FORBIDDEN: 403,
}  # every other reason: 401


class Dispatcher:
    """Routes and the inbound side of every link (`on_request` is the link's callback)."""

    def __init__(self, t: Transport) -> None:
        self.t = t
        self.me = t.key.node_id  # computed once: the id is a hash of the key
        self.routes: dict[str, RequestHandler] = {}
        self.oneway: dict[str, OneWayHandler] = {}
        self.raw: dict[str, RawHandler] = {}
        self.open: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[BaseModel]]]] = {}
        self.inflight = 0
        self.open_inflight = 0
        self.queue: asyncio.Queue[Verified] = asyncio.Queue(maxsize=t.settings.oneway_queue)
        self._workers: list[asyncio.Task[None]] = []

    def check_kind(self, kind: str) -> None:
        if kind not in self.t.verifier.schemas:
            raise ValueError(f"kind: {kind!r} is not in the schema registry")
        if kind in self.routes or kind in self.oneway or kind in self.raw:
            raise ValueError(f"kind: {kind!r} already has a handler")

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._worker(), name=f"p2p-oneway-{i}")
                         for i in range(self.t.settings.oneway_workers)]

    async def stop(self) -> None:
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        self._workers = []

    # -- one inbound message ------------------------------------------------------------------
    def on_request(self, link: Link, m: Message) -> None:
        t = self.t
        if m.type is MsgType.OPEN:
            self._spawn(link, self._serve_open(link, m))
            return
        if link.peer is None:  # an anonymous (join) session may only use open routes
            link.stats.frames_dropped["anonymous"] += 1
            self._spawn(link, link.close(reason="anonymous"))
            return
        if link.peer_id in t.faults.blocked:
            t.faults.dropped_in += 1
            self._spawn(link, link.close())  # a partition: the peer sees its connection die
            return
        ack = m.type is not MsgType.ONEWAY
        try:
            body = decode_body(m, t.verifier.schemas)
        except AuthError as e:
            t.verifier.rejected[e.reason] += 1
            if ack:
                self._spawn(link, link.reply_err(m.call, STATUS.get(e.reason, 401), e.reason.value))
            return
        t.verifier.accepted += 1
        v = self.verified(link, m, body)
        if m.type in (MsgType.ONEWAY, MsgType.ONEWAY_ACK):
            self._enqueue(link, m, v, ack)
            return
        handler: Any = (self.routes if m.type is MsgType.REQ else self.raw).get(m.kind)
        if handler is None or m.type not in (MsgType.REQ, MsgType.RAW):
            self._spawn(link, link.reply_err(m.call, 404, "no route"))
            return
        if self.inflight >= t.settings.max_inflight:
            t.counters["inbound_busy"] += 1
            self._spawn(link, link.reply_err(m.call, 503, "busy"))
            return
        self.inflight += 1
        serve = self._serve_req if m.type is MsgType.REQ else self._serve_raw
        self._spawn(link, serve(link, m.call, v, handler))

    def verified(self, link: Link, m: Message, body: BaseModel, *, re: bytes | None = None) -> Verified:
        peer = link.peer
        if peer is None:
            raise RemoteProtocolError(f"peer {link.addr}: anonymous session")
        nonce = link.session.session_id + m.call.to_bytes(8, "big")
        return Verified(kind=m.kind, sender=NodeId(peer.node_id), cert=peer, body=body, ts=self.t.clock(),
                        nonce=nonce, to=self.me, re=re)

    def verified_answer(self, link: Link, m: Message) -> Verified:
        """The typed answer to one of our requests (a bad one is the peer's fault)."""
        try:
            body = decode_body(m, self.t.verifier.schemas)
        except AuthError as e:
            raise RemoteProtocolError(f"peer {link.addr}: answer refused: {e}") from None
        self.t.verifier.accepted += 1
        return self.verified(link, m, body, re=link.session.session_id + m.call.to_bytes(8, "big"))

    def _enqueue(self, link: Link, m: Message, v: Verified, ack: bool) -> None:
        t = self.t
        if m.kind not in self.oneway:
            if ack:
                self._spawn(link, link.reply_err(m.call, 404, "no route"))
            return
        try:
            self.queue.put_nowait(v)
        except asyncio.QueueFull:
            t.counters["oneway_dropped"] += 1
            if ack:
                self._spawn(link, link.reply_err(m.call, 503, "queue full"))
            return
        if ack:
            self._spawn(link, link.reply_ack(m.call))

    def _spawn(self, link: Link, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)
        if len(link.tasks) > self.t.settings.max_pending:  # the peer sends faster than it reads answers
            self.t.counters["ws_overrun"] += 1
            asyncio.ensure_future(link.close(reason="overrun"))

    # -- handlers ---------------------------------------------------------------------------
    async def _serve_req(self, link: Link, call: int, v: Verified, handler: RequestHandler) -> None:
        try:
            try:
                answer = await handler(v)
            except AuthError as e:
                await link.reply_err(call, STATUS.get(e.reason, 403), e.reason.value)
                return
            except Exception:
                log.exception("p2p handler failed", extra={"kind": v.kind, "sender": v.sender})
                self.t.counters["handler_errors"] += 1
                await link.reply_err(call, 500, "handler error")
                return
            kind = getattr(answer, "kind", None)
            if not isinstance(kind, str):  # our bug
                log.error("p2p handler answer has no kind", extra={"kind": v.kind})
                await link.reply_err(call, 500, "handler error")
                return
            await link.reply(call, kind, answer)
            self.t.counters["requests_served"] += 1
        except (ConnectionError, RuntimeError):  # the peer went away while we worked
            self.t.counters["answers_lost"] += 1
        finally:
            self.inflight -= 1

    async def _serve_raw(self, link: Link, call: int, v: Verified, handler: RawHandler) -> None:
        try:
            try:
                data = await handler(v)
            except AuthError as e:
                await link.reply_err(call, STATUS.get(e.reason, 403), e.reason.value)
                return
            except LookupError:
                await link.reply_err(call, 404, "not found")
                return
            except Exception:
                log.exception("p2p raw handler failed", extra={"kind": v.kind, "sender": v.sender})
                self.t.counters["handler_errors"] += 1
                await link.reply_err(call, 500, "handler error")
                return
            self.t.counters["raw_served"] += 1
            if isinstance(data, FileRange):
                await self._send_file(link, call, data)
            else:
                self.t.counters["raw_bytes_out"] += len(data)
                await self._send_bytes(link, call, data)
        except (ConnectionError, RuntimeError):
            self.t.counters["answers_lost"] += 1
        finally:
            self.inflight -= 1

    async def _send_bytes(self, link: Link, call: int, data: bytes) -> None:
        piece = self.t.settings.data_piece_bytes
        if not data:
            await link.reply_data(call, b"", last=True)
        for i in range(0, len(data), piece):
            await link.reply_data(call, data[i:i + piece], last=i + piece >= len(data))

    async def _send_file(self, link: Link, call: int, r: FileRange) -> None:
        """Read pieces straight into their frame buffers (4 per thread hop, one preadv), seal each
        in place, send it: the bytes are copied once, by the kernel."""
        piece = self.t.settings.data_piece_bytes
        fd = r.file.fileno()
        with r.file:
            pos, end = r.offset, r.offset + r.length
            if pos == end:
                await link.reply_data(call, b"", last=True)
            while pos < end:
                sizes: list[int] = []
                at = pos
                while at < end and len(sizes) < 4:
                    sizes.append(min(piece, end - at))
                    at += sizes[-1]
                bufs = [data_frame_buffer(call, n, last=False, head=HEADER_BYTES, tail=TAG_BYTES) for n in sizes]
                if at >= end:
                    bufs[-1] = data_frame_buffer(call, sizes[-1], last=True, head=HEADER_BYTES, tail=TAG_BYTES)
                got = await asyncio.to_thread(_read_into, fd, bufs, sizes, pos)
                if got != at - pos:
                    await link.reply_err(call, 500, "the file is shorter than announced")
                    return
                for buf in bufs:
                    await link.send_frame_buffer(buf)
                self.t.counters["raw_bytes_out"] += got
                pos = at

    async def _serve_open(self, link: Link, m: Message) -> None:
        t = self.t
        entry = self.open.get(m.kind)
        if entry is None:
            await link.reply_err(m.call, 404, "no route")
            return
        if m.size > t.settings.open_max_bytes:
            await link.reply_err(m.call, 413, "too_large")
            return
        if self.open_inflight >= t.settings.open_max_inflight:
            t.counters["open_busy"] += 1
            await link.reply_err(m.call, 503, "busy")
            return
        self.open_inflight += 1
        try:
            model, handler = entry
            try:
                body = model.model_validate(m.body)
            except ValidationError as e:
                await link.reply_err(m.call, 422, "bad_body: " + first_error(e))
                return
            try:
                answer = await handler(body)
            except FederationError as e:  # a refusal the joiner must read (TokenError, AuthError)
                await link.reply_err(m.call, 403, str(e))
                return
            await link.reply(m.call, str(getattr(answer, "kind", m.kind)), answer)
        except (ConnectionError, RuntimeError):
            t.counters["answers_lost"] += 1
        except Exception:
            log.exception("p2p open handler failed", extra={"kind": m.kind})
            await link.reply_err(m.call, 500, "handler error")
        finally:
            self.open_inflight -= 1

    async def _worker(self) -> None:
        while True:
            v = await self.queue.get()
            try:
                await self.oneway[v.kind](v)
                self.t.counters["oneway_handled"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("p2p one-way handler failed", extra={"kind": v.kind, "sender": v.sender})
                self.t.counters["handler_errors"] += 1


def _read_into(fd: int, bufs: list[bytearray], sizes: list[int], pos: int) -> int:
    """One preadv of sum(sizes) bytes at pos into each buf's data part; how many were read."""
    at = HEADER_BYTES + PREFIX_BYTES
    views = [memoryview(b)[at:at + n] for b, n in zip(bufs, sizes, strict=True)]
    want, got = sum(sizes), 0
    while got < want:
        k = os.preadv(fd, _skip(views, got), pos + got)
        if k <= 0:
            break
        got += k
    return got


def _skip(views: list[memoryview], n: int) -> list[memoryview]:
    out = []
    for v in views:
        if n >= len(v):
            n -= len(v)
            continue
        out.append(v[n:])
        n = 0
    return out


__all__ = ["STATUS", "Dispatcher"]
