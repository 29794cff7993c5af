"""Bounded edges for aiohttp listeners (the p2p port, the local TCP API): the aiohttp glue.

- idle, partial-request and slow-header connections close after `idle_timeout_s` (aiohttp's
  keep-alive timer runs from the connection's start and closes a connection whose request is not
  complete by then); header lines and fields are size-capped;
- `EdgeSite` caps open connections per source address and in all (refused at accept, before
  any byte is parsed);
- a body that stalls: callers read it with `body_timeout_s` (`read_body`);
- malformed HTTP (a NUL byte in a header, a bad request line) is counted and logged once per
  (reason, source) window, never as a traceback (`edge_logger`: each listener its own aiohttp
  logger, so each counts its own);
- a connection the idle timer closes before any complete request is counted (`idle_timeout`);
- a WebSocket client frame that is not masked closes the connection (RFC 6455 §5.1; aiohttp
  itself accepts it): `MaskedWebSocketResponse`, counted as `unmasked_frame`.
Counters: federation.edge.edge_counters (exported in /v1/metrics and /metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from federation.edge import BAD_HTTP, IDLE_CLOSE, UNMASKED, RejectionLog, SourceCaps
from federation.ws_mask import CLOSE_1002, MaskCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    idle_timeout_s: float = 15.0  # no complete request by then (idle, slowloris, partial line): closed
    body_timeout_s: float = 30.0  # a request body that does not arrive in time: 408
    per_source: int = 256  # open connections from one address
    total: int = 8192  # open connections in all (the file limit is 20,000)
    max_line_bytes: int = 8190
    max_field_bytes: int = 8190


def runner_kwargs(s: EdgeSettings, rejections: RejectionLog | None = None) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner` (passed on to aiohttp's request handler); with
    `rejections`, malformed requests are counted there and logged quietly (`edge_logger`)."""
    out: dict[str, Any] = {"keepalive_timeout": s.idle_timeout_s, "max_line_size": s.max_line_bytes,
                           "max_field_size": s.max_field_bytes}
    if rejections is not None:
        out["logger"] = edge_logger(rejections)
    return out


class EdgeSite(web.TCPSite):
    """A TCPSite that refuses connections beyond the per-source and total caps."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, edge: EdgeSettings,
                 rejections: RejectionLog, **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self.caps = SourceCaps(edge.per_source, edge.total)
        self.rejections = rejections
        self.idle_timeout_s = edge.idle_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._capped(server), self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)

    def _capped(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Capped(factory(), self.caps, self.rejections, self.idle_timeout_s)


class _Capped(asyncio.Protocol):
    """Wraps aiohttp's protocol (it has __slots__): refuses the connection past the caps."""

    def __init__(self, inner: Any, caps: SourceCaps, rejections: RejectionLog, idle_timeout_s: float) -> None:
        self.inner, self.caps, self.rejections, self.idle_timeout_s = inner, caps, rejections, idle_timeout_s
        self.src: str | None = None
        self.opened = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        src = str(peer[0]) if peer else "?"
        why = self.caps.admit(src)
        if why is not None:
            if self.rejections.reject(why, src, time.monotonic()):
                log.warning("connection refused", extra={"reason": why, "source": src, "open": self.caps.open})
            transport.abort()  # type: ignore[attr-defined]  # a TCP transport
            return
        self.src, self.opened = src, time.monotonic()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.src is not None:
            src, self.src = self.src, None
            self.caps.release(src)
            if self._idle_closed():
                now = time.monotonic()
                if self.rejections.reject(IDLE_CLOSE, src, now):
                    log.warning("connection closed: no complete request in time", extra={
                        "reason": IDLE_CLOSE, "source": src, "after_s": round(now - self.opened, 1)})
            self.inner.connection_lost(exc)

    def _idle_closed(self) -> bool:
        """The server closed it (aiohttp's idle timer forces the close first) before any request."""
        inner = self.inner
        return (getattr(inner, "_force_close", False) and getattr(inner, "_request_count", 1) == 0
                and time.monotonic() - self.opened >= 0.9 * self.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.src is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.src is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _Checked:
    """Stands in for aiohttp's WebSocket reader on the connection: every byte is followed by a
    MaskCheck first; on an unmasked frame, a 1002 close and the connection is closed."""

    def __init__(self, inner: Any, check: MaskCheck, refuse: Callable[[], None]) -> None:
        self.inner, self.check, self.refuse = inner, check, refuse

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self.check.feed(data):
            self.refuse()
            return True, b""
        return self.inner.feed_data(data)  # type: ignore[no-any-return]  # aiohttp's (eof, tail)

    def feed_eof(self) -> None:
        self.inner.feed_eof()


class MaskedWebSocketResponse(web.WebSocketResponse):
    """A WebSocketResponse that refuses unmasked client frames (RFC 6455 §5.1)."""

    def __init__(self, *, rejections: RejectionLog, **kw: Any) -> None:
        super().__init__(**kw)
        self._rejections = rejections
        self._refused = False

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        proto: Any = request.protocol
        check = MaskCheck()
        tail_ok = check.feed(bytes(getattr(proto, "_message_tail", b"")))  # frames sent with the upgrade
        super()._post_start(request, protocol, writer)
        proto._payload_parser = _Checked(proto._payload_parser, check, lambda: self._refuse(request))
        if not tail_ok:
            self._refuse(request)

    def _refuse(self, request: web.BaseRequest) -> None:
        if self._refused:
            return
        self._refused = True
        src = request.remote or "?"
        if self._rejections.reject(UNMASKED, src, time.monotonic()):
            log.warning("WebSocket refused: a client frame is not masked", extra={"reason": UNMASKED, "source": src})
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.write(CLOSE_1002)
            transport.close()


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body, or TimeoutError when it does not arrive within `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        return await request.read()


class _QuietBadRequests(logging.Filter):
    """Drops aiohttp's traceback for malformed HTTP; counts it and logs one line per window."""

    def __init__(self, rejections: RejectionLog) -> None:
        super().__init__()
        self.rejections = rejections

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or type(exc).__name__ not in ("BadHttpMessage", "BadStatusLine", "LineTooLong",
                                                      "InvalidHeader", "BadHttpMethod", "InvalidURLError"):
            return True
        src = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        if self.rejections.reject(BAD_HTTP, src, time.monotonic()):
            log.warning("malformed HTTP request refused", extra={
                "reason": "bad_http", "source": src, "detail": str(exc).splitlines()[0][:200]})
        return False


def edge_logger(rejections: RejectionLog) -> logging.Logger:
    """A logger for one listener's aiohttp request handler: malformed HTTP is counted in
    `rejections` and logged once per window; anything else goes on to "aiohttp.server".

    Not registered with logging's manager (one per listener, never leaked): its parent is set by hand.
    """
    lg = logging.Logger("aiohttp.server.edge")  # noqa: LOG001  # unregistered on purpose (see above)
    lg.parent = logging.getLogger("aiohttp.server")
    lg.addFilter(_QuietBadRequests(rejections))
    return lg


__all__ = ["EdgeSettings", "EdgeSite", "MaskedWebSocketResponse", "edge_logger", "read_body", "runner_kwargs"]
