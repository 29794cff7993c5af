"""p2p transport: signed envelopes over aiohttp (server on the p2p port, pooled client per peer).

Every inbound message goes through EnvelopeVerifier before a handler sees it; every answer is an
envelope verified the same way and bound to its request (`re` = request nonce). Bounded: inbound
in-flight requests (503 past the cap), the one-way queue (503 when full), the peer session pool
(LRU). `faults` drops traffic to/from chosen peers (tests; the partition seam). The pre-trust
`open` channel carries only join requests (no envelope: the joiner has no cert yet). The `raw`
channel answers a signed request with unsigned bytes (bulk data whose hash the caller knows).
The WebSocket client side and its frames are in transport_ws.py; sendfile answers, capped reads
and the pre-trust join request in transport_http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Container
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from federation.certs import MSGPACK_ERRORS, NodeCert, first_error, pack
from federation.edge import RejectionLog
from federation.edge_http import EdgeSettings, EdgeSite, quiet_bad_requests, runner_kwargs
from federation.envelope import EnvelopeVerifier, Schemas, Verified, seal
from federation.errors import (
    AuthError,
    AuthReason,
    FederationError,
    PeerUnreachable,
    RemoteProtocolError,
    RemoteRejected,
)
from federation.identity import NodeKey
from federation.sansio import NodeId
from federation.transport_http import OPEN_PATH, FileRange, read_capped, request_open, send_range
from federation.transport_ws import WsPeer, peek_nonce, send_err

log = logging.getLogger(__name__)

PATH = "/p2p/v1/msg"
WS_PATH = "/p2p/v1/ws"
RAW_PATH = "/p2p/v1/raw"
_CT = "application/x-aiosd-envelope"
_STATUS: dict[AuthReason, int] = {
    AuthReason.TOO_LARGE: 413,
    AuthReason.MALFORMED: 400,
    AuthReason.UNSUPPORTED_VERSION: 400,
    AuthReason.UNKNOWN_KIND: 404,
    AuthReason.BAD_BODY: 422,
    AuthReason.FORBIDDEN: 403,
}  # every other reason: 401

RequestHandler = Callable[[Verified], Awaitable[BaseModel]]
OneWayHandler = Callable[[Verified], Awaitable[None]]


RawHandler = Callable[[Verified], Awaitable[bytes | FileRange]]
M = TypeVar("M", bound=BaseModel)


class TransportSettings(BaseModel):
    """The p2p slice of the daemon settings (units in names; defaults are for a LAN)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("0.0.0.0", description="listen address; tests use 127.0.0.1")
    port: int = Field(7701, ge=0, le=65535, description="p2p port; 0 picks a free one")
    request_timeout_s: float = Field(5.0, gt=0, description="default deadline of request()/send()")
    connect_timeout_s: float = Field(2.0, gt=0, description="TCP connect deadline (a dead peer costs this)")
    max_inflight: int = Field(256, ge=1, description="inbound requests being handled at once; 503 past it")
    oneway_queue: int = Field(1024, ge=1, description="queued one-way messages; 503 (dropped) when full")
    oneway_workers: int = Field(4, ge=1, description="tasks running one-way handlers")
    max_bytes: int = Field(1 << 20, ge=1024, description="largest envelope accepted or read back")
    max_skew_s: float = Field(30.0, gt=0, description="clock skew tolerated on envelope ts")
    max_peers: int = Field(512, ge=1, description="pooled client sessions kept (LRU)")
    per_peer_connections: int = Field(8, ge=1, description="keep-alive connections per peer")
    open_max_bytes: int = Field(16 * 1024, ge=256, description="largest pre-trust (join) request")
    open_max_inflight: int = Field(8, ge=1, description="pre-trust requests handled at once")
    shutdown_grace_s: float = Field(2.0, ge=0, description="time in-flight handlers get on close")
    websocket: bool = Field(
        True, description="request() over one long-lived WebSocket per peer (False: one HTTP POST each)"
    )
    max_ws_conns: int = Field(1024, ge=1, description="inbound WebSocket connections kept at once")
    max_pending: int = Field(1024, ge=1, description="requests awaiting an answer per peer (WebSocket)")


class TransportFaults:
    """Test hook: peers (addresses or node ids) whose traffic is dropped both ways."""

    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.dropped_out = 0
        self.dropped_in = 0

    def block(self, *peers: str) -> None:
        self.blocked.update(peers)

    def unblock(self, *peers: str) -> None:
        self.blocked.difference_update(peers)

    def clear(self) -> None:
        self.blocked.clear()


class Transport:
    """Signed request/response and one-way messaging between nodes (async context manager)."""

    def __init__(
        self,
        key: NodeKey,
        cert: NodeCert,
        ca_public: bytes,
        schemas: Schemas,
        settings: TransportSettings | None = None,
        *,
        revoked: Container[str] = frozenset(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key, self.cert, self.settings, self.clock = key, cert, settings or TransportSettings(), clock
        self._cert_b = cert.to_bytes()
        s = self.settings
        self.verifier = EnvelopeVerifier(
            ca_public,
            schemas,
            revoked=revoked,
            me=key.node_id,
            max_bytes=s.max_bytes,
            max_skew_s=s.max_skew_s,
        )
        self.faults = TransportFaults()
        self.counters: Counter[str] = Counter()
        self.edge = EdgeSettings()
        self.rejections = RejectionLog()  # edge refusals by reason (connection caps, malformed HTTP)
        self._routes: dict[str, RequestHandler] = {}
        self._oneway: dict[str, OneWayHandler] = {}
        self._raw: dict[str, RawHandler] = {}
        self._open: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[BaseModel]]]] = {}
        self._inflight = 0
        self._open_inflight = 0
        self._queue: asyncio.Queue[Verified] = asyncio.Queue(maxsize=s.oneway_queue)
        self._workers: list[asyncio.Task[None]] = []
        self._sessions: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        self._evicted: list[aiohttp.ClientSession] = []  # closed by the next _post (awaits there)
        self._peers: dict[str, WsPeer] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._ws_conns = 0
        self._server_ws: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def set_cert(self, cert: NodeCert) -> None:
        """Use a renewed certificate for every message from now on (same key)."""
        if cert.public_key != self.key.public_bytes:
            raise ValueError("cert: does not belong to this node's key")
        self.cert, self._cert_b = cert, cert.to_bytes()

    # -- routes -------------------------------------------------------------------------------

    def route(self, kind: str, handler: RequestHandler) -> None:
        """Answer requests of `kind` with handler's model (sealed as that model's kind).

        A handler refuses with AuthError(FORBIDDEN) (→ 403); any other exception → 500, logged.
        """
        self._check_kind(kind)
        self._routes[kind] = handler

    def route_oneway(self, kind: str, handler: OneWayHandler) -> None:
        """Run handler for one-way messages of `kind` (queued; the sender gets 202 on enqueue)."""
        self._check_kind(kind)
        self._oneway[kind] = handler

    def route_raw(self, kind: str, handler: RawHandler) -> None:
        """Answer signed requests of `kind` with raw bytes (unsigned: the caller must know their hash),
        or with a FileRange the kernel sends from the file without copying it through Python.

        A handler refuses with AuthError(FORBIDDEN) (→ 403) or LookupError (→ 404); else → 500.
        """
        self._check_kind(kind)
        self._raw[kind] = handler

    def route_open(self, model: type[M], handler: Callable[[M], Awaitable[BaseModel]]) -> None:
        """A pre-trust route (joins only): msgpack `model` in, msgpack model out, no envelope."""
        kind = model.model_fields["kind"].default
        self._open[kind] = (model, handler)

    def _check_kind(self, kind: str) -> None:
        if kind not in self.verifier.schemas:
            raise ValueError(f"kind: {kind!r} is not in the schema registry")
        if kind in self._routes or kind in self._oneway or kind in self._raw:
            raise ValueError(f"kind: {kind!r} already has a handler")

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        s = self.settings
        app = web.Application(client_max_size=max(s.max_bytes, s.open_max_bytes))
        app.router.add_post(PATH, self._on_msg)
        app.router.add_post(OPEN_PATH, self._on_open)
        app.router.add_post(RAW_PATH, self._on_raw)
        app.router.add_get(WS_PATH, self._on_ws)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.shutdown_grace_s, **runner_kwargs(self.edge))
        await runner.setup()
        quiet_bad_requests(self.rejections)  # bounded edges: federation/edge_http.py
        site = EdgeSite(runner, s.host, s.port, reuse_address=True, edge=self.edge, rejections=self.rejections)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or ()  # aiohttp exposes bound sockets only here
        self.port = int(sockets[0].getsockname()[1]) if sockets else s.port
        self._workers = [
            asyncio.create_task(self._worker(), name=f"p2p-oneway-{i}") for i in range(s.oneway_workers)
        ]
        log.info(
            "p2p transport listening", extra={"host": s.host, "port": self.port, "node": self.key.node_id}
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting, give in-flight handlers the grace period, cancel workers, close sessions."""
        for peer in list(self._peers.values()):
            await peer.close()
        self._peers.clear()
        for sws in list(self._server_ws):  # say goodbye first so runner.cleanup need not wait
            await sws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        self._workers = []
        sessions, self._sessions = list(self._sessions.values()), OrderedDict()
        for sess in sessions + self._evicted:
            await sess.close()
        self._evicted = []

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    # -- server ---------------------------------------------------------------------------------

    async def _on_msg(self, request: web.Request) -> web.StreamResponse:
        return await self._inbound(request, self._serve_msg, what="p2p handler failed", capped=False)

    async def _on_raw(self, request: web.Request) -> web.StreamResponse:
        return await self._inbound(request, self._serve_raw, what="p2p raw handler failed", capped=True)

    async def _inbound(self, request: web.Request,
                       serve: Callable[[web.Request, Verified], Awaitable[web.StreamResponse]],
                       *, what: str, capped: bool) -> web.StreamResponse:
        """What every signed inbound POST shares: the in-flight gate, the size cap, verification,
        the partition test hook; then `serve` answers the verified envelope."""
        s = self.settings
        if self._inflight >= s.max_inflight:
            self.counters["inbound_busy"] += 1
            return web.Response(status=503, text="busy")
        self._inflight += 1
        try:
            if (request.content_length or 0) > s.max_bytes:
                self.verifier.rejected[AuthReason.TOO_LARGE] += 1
                return web.Response(status=413, text=AuthReason.TOO_LARGE.value)
            try:
                async with asyncio.timeout(self.edge.body_timeout_s):  # a stalled body holds no slot forever
                    raw = await read_capped(request.content, s.max_bytes) if capped else await request.read()
            except TimeoutError:
                self.rejections.reject("body_timeout", request.remote or "", self.clock())
                return web.Response(status=408, text="body_timeout")
            try:
                v = self.verifier.open(raw, self.clock(), source=request.remote or "")
            except AuthError as e:
                return web.Response(status=_STATUS.get(e.reason, 401), text=e.reason.value)
            if v.sender in self.faults.blocked:
                self.faults.dropped_in += 1
                if request.transport is not None:
                    request.transport.abort()  # a partition: the peer sees a dead connection
                return web.Response(status=503)
            return await serve(request, v)
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception:
            log.exception(what, extra={"path": request.path})
            self.counters["handler_errors"] += 1
            return web.Response(status=500, text="handler error")
        finally:
            self._inflight -= 1

    async def _serve_msg(self, request: web.Request, v: Verified) -> web.StreamResponse:
        if v.kind in self._oneway:
            try:
                self._queue.put_nowait(v)
            except asyncio.QueueFull:
                self.counters["oneway_dropped"] += 1
                return web.Response(status=503, text="queue full")
            return web.Response(status=202)
        handler = self._routes.get(v.kind)
        if handler is None:
            return web.Response(status=404, text="no route")
        try:
            answer = await handler(v)
        except AuthError as e:
            return web.Response(status=_STATUS.get(e.reason, 403), text=e.reason.value)
        kind = getattr(answer, "kind", None)
        if not isinstance(kind, str):
            raise TypeError("handler answer: model has no kind")  # our bug: 500 in _inbound
        out = seal(self.key, self.cert, kind, answer, self.clock(), to=v.sender, re=v.nonce,
                   cert_bytes=self._cert_b)
        self.counters["requests_served"] += 1
        return web.Response(body=out, content_type=_CT)

    async def _serve_raw(self, request: web.Request, v: Verified) -> web.StreamResponse:
        handler = self._raw.get(v.kind)
        if handler is None:
            return web.Response(status=404, text="no route")
        try:
            data = await handler(v)
        except AuthError as e:
            return web.Response(status=_STATUS.get(e.reason, 403), text=e.reason.value)
        except LookupError:
            return web.Response(status=404, text="not found")
        self.counters["raw_served"] += 1
        if isinstance(data, FileRange):
            self.counters["raw_bytes_out"] += data.length
            return await send_range(request, data)
        self.counters["raw_bytes_out"] += len(data)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _worker(self) -> None:
        while True:
            v = await self._queue.get()
            try:
                await self._oneway[v.kind](v)
                self.counters["oneway_handled"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("p2p one-way handler failed", extra={"kind": v.kind, "sender": v.sender})
                self.counters["handler_errors"] += 1

    async def _on_open(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        entry = self._open.get(request.match_info["kind"])
        if entry is None:
            return web.Response(status=404, text="no route")
        if self._open_inflight >= s.open_max_inflight:
            self.counters["open_busy"] += 1
            return web.Response(status=503, text="busy")
        self._open_inflight += 1
        try:
            if (request.content_length or 0) > s.open_max_bytes:
                return web.Response(status=413, text="too_large")
            raw = await read_capped(request.content, s.open_max_bytes)
            if len(raw) > s.open_max_bytes:
                return web.Response(status=413, text="too_large")
            model, handler = entry
            try:
                doc = msgpack.unpackb(raw, raw=False, use_list=False)
            except MSGPACK_ERRORS:
                return web.Response(status=400, text="malformed: not msgpack")
            try:  # valid msgpack of the wrong shape: 422 (docs/wire.md)
                body = model.model_validate(doc)
            except ValidationError as e:
                return web.Response(status=422, text="bad_body: " + first_error(e))
            try:
                answer = await handler(body)
            except FederationError as e:  # a refusal the joiner must read (TokenError, AuthError)
                return web.Response(status=403, text=str(e))
            return web.Response(body=pack(answer.model_dump()), content_type="application/msgpack")
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception:
            log.exception("p2p open handler failed", extra={"path": request.path})
            return web.Response(status=500, text="handler error")
        finally:
            self._open_inflight -= 1

    # -- WebSocket channel (server side) ------------------------------------------------------

    async def _on_ws(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        if self._ws_conns >= s.max_ws_conns:
            self.counters["ws_refused"] += 1
            return web.Response(status=503, text="busy")
        ws = web.WebSocketResponse(max_msg_size=s.max_bytes, compress=False)
        await ws.prepare(request)
        self._ws_conns += 1
        self._server_ws.add(ws)
        tasks: set[asyncio.Task[None]] = set()
        source = request.remote or ""
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    break
                self._on_frame(ws, msg.data, source, tasks)
                if len(tasks) > s.max_pending:  # the peer sends faster than it reads our answers
                    self.counters["ws_overrun"] += 1
                    break
        finally:
            self._ws_conns -= 1
            self._server_ws.discard(ws)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    def _on_frame(
        self, ws: web.WebSocketResponse, raw: bytes, source: str, tasks: set[asyncio.Task[None]]
    ) -> None:
        """One inbound envelope frame: verify, then queue (one-way) or answer in a bounded task."""
        try:
            v = self.verifier.open(raw, self.clock(), source=source)
        except AuthError as e:
            self._spawn(tasks, send_err(ws, peek_nonce(raw), _STATUS.get(e.reason, 401), e.reason.value))
            return
        if v.sender in self.faults.blocked:
            self.faults.dropped_in += 1
            self._spawn(tasks, ws.close())  # a partition: the peer sees its connection die
            return
        if v.kind in self._oneway:
            try:
                self._queue.put_nowait(v)
            except asyncio.QueueFull:
                self.counters["oneway_dropped"] += 1
            return
        handler = self._routes.get(v.kind)
        if handler is None:
            self._spawn(tasks, send_err(ws, v.nonce, 404, "no route"))
            return
        if self._inflight >= self.settings.max_inflight:
            self.counters["inbound_busy"] += 1
            self._spawn(tasks, send_err(ws, v.nonce, 503, "busy"))
            return
        self._inflight += 1
        self._spawn(tasks, self._answer_ws(ws, v, handler))

    @staticmethod
    def _spawn(tasks: set[asyncio.Task[None]], coro: Awaitable[Any]) -> None:
        # Owned by the connection: cancelled when it closes; bounded by max_inflight (+ error replies).
        t: asyncio.Task[None] = asyncio.ensure_future(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    async def _answer_ws(self, ws: web.WebSocketResponse, v: Verified, handler: RequestHandler) -> None:
        try:
            try:
                answer = await handler(v)
            except AuthError as e:
                await send_err(ws, v.nonce, _STATUS.get(e.reason, 403), e.reason.value)
                return
            except Exception:
                log.exception("p2p handler failed", extra={"kind": v.kind, "sender": v.sender})
                self.counters["handler_errors"] += 1
                await send_err(ws, v.nonce, 500, "handler error")
                return
            kind = getattr(answer, "kind", None)
            if not isinstance(kind, str):  # our bug, as on the HTTP path
                log.error("p2p handler answer has no kind", extra={"kind": v.kind})
                await send_err(ws, v.nonce, 500, "handler error")
                return
            out = seal(
                self.key,
                self.cert,
                kind,
                answer,
                self.clock(),
                to=v.sender,
                re=v.nonce,
                cert_bytes=self._cert_b,
            )
            self.counters["requests_served"] += 1
            await ws.send_bytes(out)
        except (ConnectionError, RuntimeError):  # the peer went away while we worked: nothing to answer
            self.counters["answers_lost"] += 1
        finally:
            self._inflight -= 1

    # -- WebSocket channel (client side) --------------------------------------------------------

    async def _ws_peer(self, addr: str) -> WsPeer:
        peer = self._peers.get(addr)
        if peer is not None and not peer.closed:
            return peer
        lock = self._connecting.setdefault(addr, asyncio.Lock())
        async with lock:
            peer = self._peers.get(addr)
            if peer is not None and not peer.closed:
                return peer
            while self._evicted:
                await self._evicted.pop().close()
            ws = await self._session(addr).ws_connect(
                WS_PATH, max_msg_size=self.settings.max_bytes, compress=0
            )
            peer = WsPeer(addr, ws, self.verifier, self.clock, self.counters, self.settings.max_pending,
                          self._peer_closed)
            self._peers[addr] = peer
            if len(self._connecting) > self.settings.max_peers:
                self._connecting = {a: lk for a, lk in self._connecting.items() if a in self._peers}
            return peer

    def _peer_closed(self, peer: WsPeer) -> None:
        if self._peers.get(peer.addr) is peer:
            del self._peers[peer.addr]

    def _check_faults(self, addr: str, to: NodeId | None) -> None:
        if addr in self.faults.blocked or (to is not None and to in self.faults.blocked):
            self.faults.dropped_out += 1
            raise PeerUnreachable(addr, "dropped (fault injection)")

    async def _ws_request(
        self, addr: str, raw: bytes, nonce: bytes, timeout_s: float | None, to: NodeId | None
    ) -> Verified:
        self._check_faults(addr, to)
        try:
            async with asyncio.timeout(timeout_s or self.settings.request_timeout_s):
                peer = await self._ws_peer(addr)
                return await peer.call(raw, nonce)
        except TimeoutError as e:
            self.counters["timeouts"] += 1
            raise PeerUnreachable(addr, "timed out") from e
        except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError, OSError) as e:
            self.counters["unreachable"] += 1
            raise PeerUnreachable(addr, type(e).__name__) from e

    # -- client ---------------------------------------------------------------------------------

    def _session(self, addr: str) -> aiohttp.ClientSession:
        sess = self._sessions.get(addr)
        if sess is not None and not sess.closed:
            self._sessions.move_to_end(addr)
            return sess
        s = self.settings
        sess = aiohttp.ClientSession(
            base_url=f"http://{addr}",
            connector=aiohttp.TCPConnector(limit=s.per_peer_connections, enable_cleanup_closed=False),
            timeout=aiohttp.ClientTimeout(total=s.request_timeout_s, sock_connect=s.connect_timeout_s),
            auto_decompress=False,
        )
        self._sessions[addr] = sess
        while len(self._sessions) > s.max_peers:
            _, old = self._sessions.popitem(last=False)
            self._evicted.append(old)
        return sess

    async def _post(
        self, addr: str, path: str, data: bytes, timeout_s: float | None, to: NodeId | None,
        cap: int | None = None,
    ) -> tuple[int, bytes]:
        self._check_faults(addr, to)
        while self._evicted:
            await self._evicted.pop().close()
        s = self.settings
        timeout = aiohttp.ClientTimeout(
            total=timeout_s or s.request_timeout_s, sock_connect=s.connect_timeout_s
        )
        try:
            async with self._session(addr).post(
                path, data=data, timeout=timeout, headers={"Content-Type": _CT}
            ) as resp:
                limit = s.max_bytes if cap is None else cap
                if resp.content_length is not None and resp.content_length > limit:
                    raise RemoteProtocolError(f"peer {addr}: answer larger than {limit} bytes")
                # A stated length within the cap is read in one piece (one copy); else counted.
                data = await resp.read() if resp.content_length is not None else await read_capped(
                    resp.content, limit)
                if len(data) > limit:
                    raise RemoteProtocolError(f"peer {addr}: answer larger than {limit} bytes")
                return resp.status, data
        except TimeoutError as e:
            self.counters["timeouts"] += 1
            raise PeerUnreachable(addr, "timed out") from e
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as e:
            self.counters["unreachable"] += 1
            raise PeerUnreachable(addr, type(e).__name__) from e

    async def request(
        self,
        addr: str,
        kind: str,
        body: BaseModel,
        timeout_s: float | None = None,
        *,
        to: NodeId | None = None,
    ) -> Verified:
        """Send a signed request and return the peer's verified, typed answer.

        Raises:
            PeerUnreachable: refused, reset, dropped or no answer within timeout_s.
            RemoteRejected: the peer answered with an error status (401/403/404/413/422/503/500).
            RemoteProtocolError: the answer is not a valid envelope bound to this request.
        """
        nonce = os.urandom(16)
        raw = seal(self.key, self.cert, kind, body, self.clock(), to=to, nonce=nonce, cert_bytes=self._cert_b)
        if self.settings.websocket:
            v = await self._ws_request(addr, raw, nonce, timeout_s, to)
            if to is not None and v.sender != to:
                raise RemoteProtocolError(f"peer {addr}: answer is not for this request")
            return v
        status, data = await self._post(addr, PATH, raw, timeout_s, to)
        if status != 200:
            raise RemoteRejected(status, data[:200].decode("utf-8", "replace"))
        try:
            v = self.verifier.open(data, self.clock(), source=addr)
        except AuthError as e:
            raise RemoteProtocolError(f"peer {addr}: answer refused: {e}") from e
        if v.re != nonce or (to is not None and v.sender != to):
            raise RemoteProtocolError(f"peer {addr}: answer is not for this request")
        return v

    async def send(
        self,
        addr: str,
        kind: str,
        body: BaseModel,
        timeout_s: float | None = None,
        *,
        to: NodeId | None = None,
        ack: bool = True,
    ) -> None:
        """Send a signed one-way message.

        ack=True: one HTTP POST, returns when the peer queued it (503 when its queue is full).
        ack=False: a frame on the peer's WebSocket, returns when written; a full peer queue drops
        it there (counted as p2p_oneway_dropped): for gossip, where the next round repairs a loss.

        Raises:
            PeerUnreachable / RemoteRejected (503 when the peer's queue is full: back off).
        """
        raw = seal(self.key, self.cert, kind, body, self.clock(), to=to, cert_bytes=self._cert_b)
        if not ack and self.settings.websocket:
            self._check_faults(addr, to)
            try:
                async with asyncio.timeout(timeout_s or self.settings.request_timeout_s):
                    peer = await self._ws_peer(addr)
                    await peer.ws.send_bytes(raw)
            except TimeoutError as e:
                self.counters["timeouts"] += 1
                raise PeerUnreachable(addr, "timed out") from e
            except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError, OSError) as e:
                self.counters["unreachable"] += 1
                raise PeerUnreachable(addr, type(e).__name__) from e
            return
        status, data = await self._post(addr, PATH, raw, timeout_s, to)
        if status != 202:
            raise RemoteRejected(status, data[:200].decode("utf-8", "replace"))

    async def request_raw(
        self,
        addr: str,
        kind: str,
        body: BaseModel,
        *,
        max_bytes: int,
        timeout_s: float | None = None,
        to: NodeId | None = None,
    ) -> bytes:
        """Send a signed request; return the peer's raw answer (at most max_bytes, NOT signed:
        the caller checks it against a hash it already trusts).

        Raises:
            PeerUnreachable, RemoteRejected (404: the peer lacks it), RemoteProtocolError (too large).
        """
        raw = seal(self.key, self.cert, kind, body, self.clock(), to=to, cert_bytes=self._cert_b)
        status, data = await self._post(addr, RAW_PATH, raw, timeout_s, to, cap=max_bytes)
        if status != 200:
            raise RemoteRejected(status, data[:200].decode("utf-8", "replace"))
        self.counters["raw_bytes_in"] += len(data)
        return data

    async def request_open(
        self, addr: str, body: BaseModel, answer: type[M], timeout_s: float | None = None
    ) -> M:
        """Pre-trust request (join): plain msgpack both ways; the caller verifies what comes back.

        Raises:
            PeerUnreachable, RemoteRejected (the text is the seed's sentence, e.g. token expired),
            RemoteProtocolError (answer not a valid `answer`).
        """
        kind = getattr(body, "kind", None)
        if not isinstance(kind, str):
            raise TypeError("body: model has no kind")
        status, data = await self._post(
            addr, OPEN_PATH.format(kind=kind), pack(body.model_dump()), timeout_s, None
        )
        if status != 200:
            raise RemoteRejected(status, data[:500].decode("utf-8", "replace"))
        try:
            return answer.model_validate(msgpack.unpackb(data, raw=False, use_list=False))
        except (ValidationError, ValueError, TypeError, msgpack.UnpackException) as e:
            raise RemoteProtocolError(f"peer {addr}: bad answer") from e

    def metrics(self) -> dict[str, int]:
        """Transport and verifier counters (names are stable metric names)."""
        out = dict(self.verifier.metrics())
        out.update({f"p2p_{k}": v for k, v in self.counters.items()})
        out["p2p_inflight"] = self._inflight
        out["p2p_oneway_queued"] = self._queue.qsize()
        out["p2p_dropped_in"] = self.faults.dropped_in
        out["p2p_dropped_out"] = self.faults.dropped_out
        return out


__all__ = [
    "OPEN_PATH",
    "FileRange",
    "OneWayHandler",
    "RawHandler",
    "RequestHandler",
    "Transport",
    "TransportFaults",
    "TransportSettings",
    "request_open",
]
