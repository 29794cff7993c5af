"""The instance's task endpoint: aiohttp routes of the instance contract (see wire.py), start and drain.

It decodes, admits into the bounded pool and encodes; the callback pipeline is runner.py's. Uses only
aiohttp APIs present in 3.8 (Debian bookworm) through 3.14.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Any, Self

from aiohttp import web

from sdk import wire
from sdk.errors import Busy, CallbackFailed, PacketError
from sdk.pool import WorkerPool
from sdk.runner import TaskRunner

log = logging.getLogger(__name__)

# SIGTERM drain budget: the daemon waits for us before killing; 2 s keeps restarts quick (contract).
DRAIN_S = 2.0
# health/setParameters/mgmt run on their own 2 threads so a saturated task pool never fails health checks;
# 10 s matches the slowest health-check interval we expect and bounds a hung callback.
CONTROL_WORKERS = 2
CONTROL_QUEUE = 16
CONTROL_TIMEOUT_S = 10.0
# Control bodies are small JSON documents.
MAX_CONTROL_BODY_BYTES = 1024 * 1024


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.json_response(obj, status=status, dumps=_dumps)


class InstanceServer:
    """Serves one block instance until stop(); usable as `async with InstanceServer(...) as srv`."""

    def __init__(self, runner: TaskRunner, *, workers: int = 4, queue_max: int = 64,
                 max_body_bytes: int = wire.DEFAULT_MAX_BODY_BYTES, drain_s: float = DRAIN_S) -> None:
        self.runner = runner
        self.block_id = runner.block_id
        self.pool = WorkerPool(workers, queue_max, name="sdk-task")
        self.control = WorkerPool(CONTROL_WORKERS, CONTROL_QUEUE, name="sdk-control")
        self.drain_s = drain_s
        self.max_body_bytes = max_body_bytes
        self.address = ""
        self._stopping = False
        self._stopped = False
        self._inflight = 0
        self._drained = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._socket_path: str | None = None
        m = runner.metrics
        m.register_counter("tasks_rejected", "tasks answered 503 (busy or shutting down)", labels=("reason",))
        m.register_counter("tasks_bad_request", "task bodies that could not be decoded")
        m.register_gauge("muxer_pending", "joins waiting for more inputs")
        m.register_counter("muxer_evicted", "pending joins evicted by the cap (oldest first)")
        m.register_gauge("tasks_inflight", "tasks admitted and not yet answered")
        app = web.Application(client_max_size=max_body_bytes)
        app.router.add_post(wire.TASK_PATH, self._task)
        app.router.add_get("/health", self._health)
        app.router.add_post("/setParameters", self._set_parameters)
        app.router.add_post("/mgmt", self._mgmt)
        app.router.add_get("/metrics", self._metrics)
        self.app = app
        self._app_runner = web.AppRunner(app, access_log=None, handle_signals=False)

    @property
    def stopping(self) -> bool:
        """True once stop() began: new tasks get 503 ShuttingDown."""
        return self._stopping

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start_unix(self, path: str) -> str:
        """Listen on a unix socket (a stale socket file at `path` is replaced)."""
        await self._app_runner.setup()
        try:
            if os.path.exists(path) and not os.path.isdir(path):
                os.unlink(path)
        except OSError:
            pass
        loop = asyncio.get_running_loop()
        srv = await loop.create_unix_server(self._app_runner.server, path)  # type: ignore[arg-type]
        self._servers.append(srv)
        self._socket_path = path
        self.address = f"unix:{path}"
        log.info("instance listening", extra={"block_id": self.block_id, "socket": path,
                                               "workers": self.pool.workers, "queue": self.pool.queue_max})
        return self.address

    async def start_tcp(self, port: int) -> int:
        """Listen on 127.0.0.1:port (0 = any free port); returns the port."""
        await self._app_runner.setup()
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(self._app_runner.server, "127.0.0.1", port,  # type: ignore[arg-type]
                                       family=socket.AF_INET)
        self._servers.append(srv)
        bound = int(srv.sockets[0].getsockname()[1])
        self.address = f"http://127.0.0.1:{bound}"
        log.info("instance listening", extra={"block_id": self.block_id, "host": "127.0.0.1", "port": bound,
                                               "workers": self.pool.workers, "queue": self.pool.queue_max})
        return bound

    async def stop(self) -> None:
        """Stop accepting, drain in-flight tasks for at most drain_s, then close (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping = True
        log.info("instance stopping", extra={"block_id": self.block_id, "inflight": self._inflight})
        for srv in self._servers:
            srv.close()
        if self._inflight:
            try:
                await asyncio.wait_for(self._drained.wait(), self.drain_s)
            except TimeoutError:
                log.warning("drain deadline passed", extra={"block_id": self.block_id, "left": self._inflight})
        self.pool.close()
        self.control.close()
        if self._app_runner.server is not None:
            await self._app_runner.server.shutdown(0.1)
        await self._app_runner.cleanup()
        if self._socket_path:
            try:
                os.unlink(self._socket_path)
            except OSError:
                pass
        log.info("instance stopped", extra={"block_id": self.block_id})

    # -- routes -------------------------------------------------------------------------------------
    def _task_error(self, status: int, type_: str, message: str, stage: str) -> web.Response:
        err = {"type": type_, "message": message, "block_id": self.block_id, "stage": stage}
        return web.Response(status=status, body=wire.encode_error(err), content_type=wire.MSGPACK)

    async def _task(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        metrics = self.runner.metrics
        if self._stopping:
            metrics.increment_counter("tasks_rejected", labels={"reason": "shutting_down"})
            return self._task_error(503, "ShuttingDown", "instance is stopping", "admit")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.increment_counter("tasks_bad_request")
            return self._task_error(413, "TooLarge", f"body exceeds {self.max_body_bytes} bytes", "decode")
        try:
            packet = wire.decode_packet(body)
        except PacketError as e:
            metrics.increment_counter("tasks_bad_request")
            return self._task_error(400, "BadRequest", str(e), "decode")
        try:
            fut = self.pool.submit(lambda: self.runner.run_task(packet, started))
        except Busy as e:
            metrics.increment_counter("tasks_rejected", labels={"reason": "busy"})
            return self._task_error(503, "Busy", str(e), "admit")
        self._inflight += 1
        try:
            outputs = await fut
        except CallbackFailed as e:
            return web.Response(status=422, body=wire.encode_error(e.to_dict()), content_type=wire.MSGPACK)
        except Exception as e:  # an SDK bug, not the block's: answer and keep serving
            log.exception("task failed inside the sdk", extra={"block_id": self.block_id})
            return self._task_error(500, type(e).__name__, str(e), "sdk")
        finally:
            self._inflight -= 1
            if self._stopping and self._inflight == 0:
                self._drained.set()
        return web.Response(body=wire.encode_reply(outputs), content_type=wire.MSGPACK)

    async def _control(self, fn: Any) -> Any:
        """Run a control callback on the control pool with a deadline (raises Busy or TimeoutError)."""
        return await asyncio.wait_for(self.control.submit(fn), CONTROL_TIMEOUT_S)

    async def _health(self, request: web.Request) -> web.Response:
        try:
            healthy, detail = await self._control(self.runner.health)
        except Busy:
            return _json({"healthy": False, "detail": {"type": "Busy", "message": "control pool full"}}, 503)
        except TimeoutError:
            return _json({"healthy": False, "detail": {"type": "Timeout",
                                                        "message": f"health() took over {CONTROL_TIMEOUT_S} s"}}, 503)
        if self._stopping:
            healthy = False
        return _json({"healthy": healthy, "detail": detail}, 200 if healthy else 503)

    async def _json_body(self, request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > MAX_CONTROL_BODY_BYTES:
            raise PacketError("body", f"larger than {MAX_CONTROL_BODY_BYTES} bytes")
        raw = await request.read()
        if len(raw) > MAX_CONTROL_BODY_BYTES:
            raise PacketError("body", f"larger than {MAX_CONTROL_BODY_BYTES} bytes")
        try:
            return json.loads(raw)
        except ValueError as e:
            raise PacketError("body", f"not valid JSON ({e})") from None

    def _bad(self, message: str) -> web.Response:
        return _json({"ok": False, "error": {"type": "BadRequest", "message": message, "block_id": self.block_id}},
                     400)

    async def _control_call(self, fn: Any) -> web.Response:
        try:
            result = await self._control(fn)
        except CallbackFailed as e:
            return _json({"ok": False, "error": e.to_dict()}, 422)
        except Busy:
            return _json({"ok": False, "error": {"type": "Busy", "message": "control pool full",
                                                 "block_id": self.block_id}}, 503)
        except TimeoutError:
            return _json({"ok": False, "error": {"type": "Timeout", "block_id": self.block_id,
                                                 "message": f"callback took over {CONTROL_TIMEOUT_S} s"}}, 503)
        return _json(result)

    async def _set_parameters(self, request: web.Request) -> web.Response:
        try:
            params = await self._json_body(request)
        except PacketError as e:
            return self._bad(str(e))
        if not isinstance(params, dict):
            return self._bad("body: must be a JSON object of parameters")
        return await self._control_call(lambda: {"ok": True, "parameters": self.runner.update(params)})

    async def _mgmt(self, request: web.Request) -> web.Response:
        try:
            body = await self._json_body(request)
        except PacketError as e:
            return self._bad(str(e))
        if not isinstance(body, dict):
            return self._bad("body: must be a JSON object {mgmt_action, mgmt_data}")
        action = body.get("mgmt_action")
        if not isinstance(action, str) or not action:
            return self._bad("body.mgmt_action: must be a non-empty string")
        data = body.get("mgmt_data")
        return await self._control_call(lambda: {"ok": True, "result": self.runner.management(action, data)})

    async def _metrics(self, request: web.Request) -> web.Response:
        m = self.runner.metrics
        m.set_gauge("queue_length", self.pool.waiting)
        m.set_gauge("tasks_inflight", self._inflight)
        mux = self.runner.muxer
        if mux is not None:
            m.set_gauge("muxer_pending", mux.pending)
            evicted = mux.evicted - m.value("muxer_evicted")
            if evicted > 0:
                m.increment_counter("muxer_evicted", evicted)
        return web.Response(body=m.render().encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
