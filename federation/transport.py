"""p2p transport: every message rides an encrypted, mutually authenticated session (aiohttp WebSocket).

A connection starts with the session handshake (federation/sessions/handshake.py: ephemeral
X25519, both node certs checked like envelopes were, transcript signed by both node keys); then
every message is one AEAD frame (frames.py) whose plaintext holds the kind, the body (with its
`v`) and a call id (messages.py). Point-to-point messages need no per-message signature: the
session authenticates the sender. What a third party must check (registry records, manifests,
revocations, join tokens) carries its origin signature inside the body, as before.

Bounded: handshakes (per-source rate, in-progress cap, deadline), inbound in-flight requests
(503 past the cap), the one-way queue (503 / drop), links and client sessions (LRU), pending calls
per link. `faults` drops traffic to/from chosen peers (tests; the partition seam). Pre-trust
(join) requests use an anonymous session (`route_open`, `request_open`). Raw answers (bulk data
whose hash the caller knows) stream as DATA frames of `data_piece_bytes`.
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
from typing import Any, Self, TypeVar, cast

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from federation.certs import NodeCert, check_cert_state
from federation.edge import RejectionLog, edge_counters
from federation.edge_http import EdgeSettings, EdgeSite, MaskedWebSocketResponse, runner_kwargs
from federation.envelope import EnvelopeVerifier, Schemas, Verified
from federation.errors import AuthError, PeerUnreachable, RemoteProtocolError, SessionError, SessionReason
from federation.identity import NodeKey
from federation.sansio import NodeId
from federation.sessions.frames import FrameLimits
from federation.sessions.gate import GateLimits, HandshakeGate
from federation.sessions.handshake import CIPHER, ClientHandshake, Identity, ServerHandshake
from federation.sessions.messages import Message, MsgType
from federation.sessions.stats import PeerSessionInfo, SessionsReport, SessionStats
from federation.transport_http import FileRange
from federation.transport_link import Link
from federation.transport_serve import Dispatcher
from federation.transport_ws import (
    WS_PATH,
    client_handshake,
    close_code_of,
    frame_cap,
    open_call,
    request_open,
    server_handshake,
)

log = logging.getLogger(__name__)

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
    max_bytes: int = Field(1 << 20, ge=1024, description="largest message body accepted or read back")
    max_skew_s: float = Field(30.0, gt=0, description="clock skew tolerated (kept for the envelope API)")
    max_peers: int = Field(512, ge=1, description="outbound links and client sessions kept (LRU)")
    per_peer_connections: int = Field(8, ge=1, description="keep-alive connections per peer")
    open_max_bytes: int = Field(16 * 1024, ge=256, description="largest pre-trust (join) request")
    open_max_inflight: int = Field(8, ge=1, description="pre-trust requests handled at once")
    shutdown_grace_s: float = Field(2.0, ge=0, description="time in-flight handlers get on close")
    websocket: bool = Field(True, description="kept for compatibility: every message rides a session")
    max_ws_conns: int = Field(1024, ge=1, description="inbound links kept at once")
    max_pending: int = Field(1024, ge=1, description="requests awaiting an answer per link")
    handshake_timeout_s: float = Field(5.0, gt=0, description="a handshake not done by then is dropped")
    handshake_rate_s: float = Field(20.0, gt=0, description="handshakes per second per source address")
    handshake_burst: int = Field(64, ge=1, description="handshakes a source may start at once")
    max_handshakes: int = Field(64, ge=1, description="inbound handshakes in progress at once")
    rekey_s: float = Field(3600.0, gt=0, description="a session key is replaced after this long")
    rekey_frames: int = Field(1 << 32, ge=2, description="... or after this many frames")
    data_piece_bytes: int = Field(256 * 1024, ge=4096, description="bulk answers travel in frames this big")


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
    """Request/response and one-way messaging between nodes over sessions (async context manager)."""

    def __init__(self, key: NodeKey, cert: NodeCert, ca_public: bytes, schemas: Schemas,
                 settings: TransportSettings | None = None, *, revoked: Container[str] = frozenset(),
                 clock: Callable[[], float] = time.time) -> None:
        self.key, self.cert, self.settings, self.clock = key, cert, settings or TransportSettings(), clock
        self.ca_public, self.revoked = ca_public, revoked
        self._cert_b = cert.to_bytes()
        self._cert_gen = 0
        s = self.settings
        # Kept for its schema registry and its cache of CA-verified certs (aiosd reads both).
        self.verifier = EnvelopeVerifier(ca_public, schemas, revoked=revoked, me=key.node_id,
                                         max_bytes=s.max_bytes, max_skew_s=s.max_skew_s)
        self.faults = TransportFaults()
        self.counters: Counter[str] = Counter()
        self.stats = SessionStats()
        self.edge = EdgeSettings()
        self.rejections = RejectionLog()  # edge refusals by reason (connection caps, malformed HTTP)
        self.limits = FrameLimits(max_frame_bytes=frame_cap(max(s.max_bytes, s.open_max_bytes)),
                                  rekey_frames=s.rekey_frames, rekey_s=s.rekey_s)
        self.gate = HandshakeGate(GateLimits(per_source_rate_s=s.handshake_rate_s,
                                             per_source_burst=s.handshake_burst, max_pending=s.max_handshakes))
        self.serve = Dispatcher(self)
        self._sessions: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        self._evicted: list[aiohttp.ClientSession] = []
        self._links: dict[str, Link] = {}
        self._link_tasks: dict[Link, asyncio.Task[None]] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._server_links: set[Link] = set()
        self._ws_conns = 0
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    def set_cert(self, cert: NodeCert) -> None:
        """Use a renewed certificate from now on (same key): later links present it."""
        if cert.public_key != self.key.public_bytes:
            raise ValueError("cert: does not belong to this node's key")
        self.cert, self._cert_b = cert, cert.to_bytes()
        self._cert_gen += 1

    # -- routes ---------------------------------------------------------------------------------
    def route(self, kind: str, handler: RequestHandler) -> None:
        """Answer requests of `kind` with handler's model (sent as that model's kind).

        A handler refuses with AuthError(FORBIDDEN) (→ 403); any other exception → 500, logged.
        """
        self.serve.check_kind(kind)
        self.serve.routes[kind] = handler

    def route_oneway(self, kind: str, handler: OneWayHandler) -> None:
        """Run handler for one-way messages of `kind` (queued; acknowledged on enqueue when asked)."""
        self.serve.check_kind(kind)
        self.serve.oneway[kind] = handler

    def route_raw(self, kind: str, handler: RawHandler) -> None:
        """Answer requests of `kind` with raw bytes (the caller must know their hash), or with a
        FileRange read in pieces, each sealed in its own frame.

        A handler refuses with AuthError(FORBIDDEN) (→ 403) or LookupError (→ 404); else → 500.
        """
        self.serve.check_kind(kind)
        self.serve.raw[kind] = handler

    def route_open(self, model: type[M], handler: Callable[[M], Awaitable[BaseModel]]) -> None:
        """A pre-trust route (joins only): served on anonymous sessions, typed `model` in and out."""
        kind = model.model_fields["kind"].default
        self.serve.open[kind] = (model, handler)

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        s = self.settings
        app = web.Application()
        app.router.add_get(WS_PATH, self._on_ws)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.shutdown_grace_s,
                                **runner_kwargs(self.edge, self.rejections))
        await runner.setup()
        site = EdgeSite(runner, s.host, s.port, reuse_address=True, edge=self.edge, rejections=self.rejections)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or ()  # aiohttp exposes bound sockets only here
        self.port = int(sockets[0].getsockname()[1]) if sockets else s.port
        self.serve.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="p2p-session-sweep")
        log.info("p2p transport listening", extra={"host": s.host, "port": self.port, "node": self.key.node_id})
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting, close links, give handlers the grace period, cancel workers."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for link in list(self._links.values()) + list(self._server_links):
            await link.close()
        for task in list(self._link_tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._links.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.serve.stop()
        sessions, self._sessions = list(self._sessions.values()), OrderedDict()
        for sess in sessions + self._evicted:
            await sess.close()
        self._evicted = []

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def _identity(self) -> Identity:
        return Identity(self.key, self._cert_b)

    # -- server side ----------------------------------------------------------------------------
    async def _on_ws(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        source = request.remote or ""
        refused = self.gate.admit(source, time.monotonic())
        if refused is None and self._ws_conns >= s.max_ws_conns:
            self.gate.done()
            refused = SessionReason.BUSY
        if refused is not None:  # before the upgrade: a flood costs one parsed request each
            self.stats.handshake_failures[refused.value] += 1
            return web.Response(status=429 if refused.value == "rate_limited" else 503, text=refused.value)
        ws = MaskedWebSocketResponse(max_msg_size=self.limits.max_frame_bytes, compress=False, autoping=True,
                                     rejections=self.rejections)
        self._ws_conns += 1
        try:
            await ws.prepare(request)
            hs = ServerHandshake(os.urandom, me=self._identity(), ca_public=self.ca_public,
                                 certs=self.verifier.certs, revoked=self.revoked, limits=self.limits)
            try:
                async with asyncio.timeout(s.handshake_timeout_s):
                    session = await server_handshake(ws, hs, self.clock)
            except (SessionError, TimeoutError) as e:
                self.gate.done()
                reason = e.reason.value if isinstance(e, SessionError) else "timeout"
                self.stats.handshake_failures[reason] += 1
                if self.verifier.quiet.should_log(reason, source, self.clock()):
                    log.warning("p2p handshake refused", extra={"reason": reason, "source": source})
                await ws.close(code=close_code_of(reason), message=reason.encode())
                return ws
            except BaseException:
                self.gate.done()
                raise
            self.gate.done()
            self.stats.handshakes_ok += 1
            link = Link(ws, session, source, self.stats, clock=self.clock, revoked=self.revoked,
                        on_request=self.serve.on_request, max_pending=s.max_pending)
            self._server_links.add(link)
            try:
                await link.run()
            finally:
                self._server_links.discard(link)
            return ws
        finally:
            self._ws_conns -= 1

    # -- client side ----------------------------------------------------------------------------
    def _session(self, addr: str) -> aiohttp.ClientSession:
        sess = self._sessions.get(addr)
        if sess is not None and not sess.closed:
            self._sessions.move_to_end(addr)
            return sess
        s = self.settings
        sess = aiohttp.ClientSession(
            base_url=f"http://{addr}",
            connector=aiohttp.TCPConnector(limit=s.per_peer_connections, enable_cleanup_closed=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s),
            auto_decompress=False,
        )
        self._sessions[addr] = sess
        while len(self._sessions) > s.max_peers:
            old_addr, old = self._sessions.popitem(last=False)
            self._evicted.append(old)
            link = self._links.pop(old_addr, None)
            if link is not None:
                asyncio.ensure_future(link.close())
        return sess

    async def _link(self, addr: str) -> Link:
        link = self._links.get(addr)
        if link is not None and not link.closed and link.cert_gen == self._cert_gen:
            return link
        lock = self._connecting.setdefault(addr, asyncio.Lock())
        async with lock:
            link = self._links.get(addr)
            if link is not None and not link.closed:
                if link.cert_gen == self._cert_gen:
                    return link
                asyncio.ensure_future(self._retire(link))
            while self._evicted:
                await self._evicted.pop().close()
            ws = await self._session(addr).ws_connect(WS_PATH, max_msg_size=self.limits.max_frame_bytes,
                                                      compress=0)
            hs = ClientHandshake(os.urandom, me=self._identity(), certs=self.verifier.certs,
                                 revoked=self.revoked, limits=self.limits)
            try:
                async with asyncio.timeout(self.settings.handshake_timeout_s):
                    session = await client_handshake(ws, hs, addr, self.clock, self.stats)
            except BaseException:
                await ws.close()
                raise
            link = Link(ws, session, addr, self.stats, clock=self.clock, revoked=self.revoked,
                        on_request=None, max_pending=self.settings.max_pending, cert_gen=self._cert_gen)
            self._links[addr] = link
            task = asyncio.create_task(self._run_link(addr, link), name=f"p2p-link-{addr}")
            self._link_tasks[link] = task
            if len(self._connecting) > self.settings.max_peers:
                self._connecting = {a: lk for a, lk in self._connecting.items() if a in self._links}
            return link

    async def _run_link(self, addr: str, link: Link) -> None:
        try:
            await link.run()
        finally:
            self._link_tasks.pop(link, None)
            if self._links.get(addr) is link:
                del self._links[addr]

    async def _retire(self, link: Link) -> None:
        """Close a link made with an older cert once its calls are answered (bounded wait)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.request_timeout_s):
                while link.calls:
                    await asyncio.sleep(0.05)
        await link.close()

    def _check_faults(self, addr: str, to: NodeId | None) -> None:
        if addr in self.faults.blocked or (to is not None and to in self.faults.blocked):
            self.faults.dropped_out += 1
            raise PeerUnreachable(addr, "dropped (fault injection)")

    async def _call(self, addr: str, type_: MsgType, kind: str, body: BaseModel, timeout_s: float | None,
                    to: NodeId | None, raw_cap: int | None = None) -> tuple[Link, Message | bytes | bytearray]:
        self._check_faults(addr, to)
        try:
            async with asyncio.timeout(timeout_s or self.settings.request_timeout_s):
                link = await self._link(addr)
                if to is not None and link.peer_id != to:
                    raise RemoteProtocolError(f"peer {addr} is node {link.peer_id}, not {to}")
                if type_ is MsgType.ONEWAY:
                    await link.notify(kind, body)
                    return link, b""
                return link, await link.call(type_, kind, body, raw_cap=raw_cap)
        except TimeoutError as e:
            self.counters["timeouts"] += 1
            raise PeerUnreachable(addr, "timed out") from e
        except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError, OSError) as e:
            if isinstance(e, PeerUnreachable):
                raise
            self.counters["unreachable"] += 1
            raise PeerUnreachable(addr, type(e).__name__) from e

    async def request(self, addr: str, kind: str, body: BaseModel, timeout_s: float | None = None, *,
                      to: NodeId | None = None) -> Verified:
        """Send a request over the session to `addr` and return the peer's typed answer.

        Raises:
            PeerUnreachable: refused, reset, dropped or no answer within timeout_s.
            RemoteRejected: the peer refused (401/403/404/413/422/503/500) or refused our session.
            RemoteProtocolError: the answer is not a valid answer (unknown kind, bad body, wrong node).
        """
        link, got = await self._call(addr, MsgType.REQ, kind, body, timeout_s, to)
        if not isinstance(got, Message):
            raise RemoteProtocolError(f"peer {addr}: answer is not for this request")
        return self.serve.verified_answer(link, got)

    async def send(self, addr: str, kind: str, body: BaseModel, timeout_s: float | None = None, *,
                   to: NodeId | None = None, ack: bool = True) -> None:
        """Send a one-way message.

        ack=True: returns when the peer queued it (RemoteRejected 503 when its queue is full).
        ack=False: returns when written; a full peer queue drops it there (counted): for gossip.

        Raises:
            PeerUnreachable / RemoteRejected.
        """
        await self._call(addr, MsgType.ONEWAY_ACK if ack else MsgType.ONEWAY, kind, body, timeout_s, to)

    async def request_raw(self, addr: str, kind: str, body: BaseModel, *, max_bytes: int,
                          timeout_s: float | None = None, to: NodeId | None = None) -> bytes:
        """Send a request; return the peer's raw answer (at most max_bytes; the caller checks it
        against a hash it already trusts).

        Raises:
            PeerUnreachable, RemoteRejected (404: the peer lacks it), RemoteProtocolError (too large).
        """
        _, got = await self._call(addr, MsgType.RAW, kind, body, timeout_s, to, raw_cap=max_bytes)
        if not isinstance(got, bytes | bytearray):
            raise RemoteProtocolError(f"peer {addr}: not a raw answer")
        self.counters["raw_bytes_in"] += len(got)
        # A bytearray when the answer filled max_bytes (saves a copy of up to 16 MiB); it has every
        # method of bytes callers use (hash, slice, len, write), so it is typed as bytes.
        return cast(bytes, got)

    async def request_open(self, addr: str, body: BaseModel, answer: type[M],
                           timeout_s: float | None = None) -> M:
        """Pre-trust request (join) over this node's member session; the caller verifies the answer.

        Raises:
            PeerUnreachable, RemoteRejected (the text is the seed's sentence), RemoteProtocolError.
        """
        self._check_faults(addr, None)
        try:
            async with asyncio.timeout(timeout_s or self.settings.request_timeout_s):
                return await open_call(await self._link(addr), body, answer)
        except TimeoutError as e:
            raise PeerUnreachable(addr, "timed out") from e
        except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError, OSError) as e:
            if isinstance(e, PeerUnreachable):
                raise
            raise PeerUnreachable(addr, type(e).__name__) from e

    # -- sessions: revocation sweep, report, metrics --------------------------------------------
    def end_invalid_sessions(self) -> int:
        """Close every link whose peer cert is now revoked or expired; how many were closed."""
        now, n = self.clock(), 0
        for link in list(self._links.values()) + list(self._server_links):
            if link.peer is None or link.closed:
                continue
            try:
                check_cert_state(link.peer, now, self.revoked)
            except AuthError:
                self.stats.frames_dropped["peer_cert"] += 1
                asyncio.ensure_future(link.close(close_code_of("revoked"), "peer_cert"))
                n += 1
        return n

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.end_invalid_sessions()

    def edge_metrics(self) -> dict[str, Any]:
        """The p2p port's edge counters (federation/edge.py) and its refused handshakes by reason."""
        return {**edge_counters(self.rejections), "handshakes_rejected": dict(self.stats.handshake_failures)}

    def sessions_report(self) -> SessionsReport:
        """Totals and one line per live session (for `aiosd doctor`)."""
        now, peers = self.clock(), []
        for link in list(self._links.values()) + list(self._server_links):
            if link.closed:
                continue
            s = link.session
            peers.append(PeerSessionInfo(
                peer=link.peer_id or "", addr=link.addr, initiator=s.initiator, cipher=CIPHER,
                session_id=s.session_id.hex(), age_s=round(now - s.started, 3),
                last_rekey_age_s=round(now - max(s.sealer.epoch_started, s.opener.epoch_started), 3),
                epoch_out=s.sealer.epoch, epoch_in=s.opener.epoch, frames_out=s.sealer.counter,
                cert_expires=0 if link.peer is None else link.peer.expires))
        st = self.stats
        return SessionsReport(CIPHER, st.handshakes_ok, dict(st.handshake_failures), dict(st.frames_dropped),
                              st.sessions_opened, st.sessions_closed, st.rekeys + sum(p.epoch_out for p in peers),
                              tuple(peers))

    def metrics(self) -> dict[str, int]:
        """Transport, verifier and session counters (names are stable metric names)."""
        out = dict(self.verifier.metrics())
        out.update({f"p2p_{k}": v for k, v in self.counters.items()})
        out.update(self.stats.metrics())
        out["p2p_inflight"] = self.serve.inflight
        out["p2p_oneway_queued"] = self.serve.queue.qsize()
        out["p2p_dropped_in"] = self.faults.dropped_in
        out["p2p_dropped_out"] = self.faults.dropped_out
        out["sessions_live"] = len(self._links) + len(self._server_links)
        return out

    @property
    def _inflight(self) -> int:  # tests read it
        return self.serve.inflight


__all__ = ["FileRange", "OneWayHandler", "RawHandler", "RequestHandler", "Transport", "TransportFaults",
           "TransportSettings", "request_open"]
