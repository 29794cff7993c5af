"""The local API server: aiohttp on a unix socket (mode 0660) and, optionally, TCP HOST:PORT.

Who may call what is auth.py's: the socket by peer uid, TCP by bearer token (the node's api.token in
the data dir, mode 0600, is an admin; user tokens come from the console). Plain TCP listens on
127.0.0.1 only; any other address (the remote API) needs TLS (`api.tls_cert` / `api.tls_key`) and is
refused at start without it. Every failure inside a handler becomes `{"error": {code, message, field}}`.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from aiosd.api.auth import AuditHook, Authenticate, auth_middleware
from aiosd.api.routes import ApiProblem, Route, error_response, openapi
from aiosd.errors import AiosdError, ConfigError
from federation.edge import RejectionLog, edge_counters
from federation.edge_http import EdgeSettings, EdgeSite, runner_kwargs
from storage.errors import DiskFullError, OutOfFilesError

log = logging.getLogger(__name__)

TOKEN_FILE = "api.token"
SOCKET_MODE = 0o660
DATA_DIR_KEY = web.AppKey("data_dir", Path)
REJECTIONS_KEY = web.AppKey("rejections", RejectionLog)
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_NO_FILES = (errno.EMFILE, errno.ENFILE)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def exhausted(exc: BaseException, data_dir: Path) -> tuple[int, str, str] | None:
    """(status, code, message) when `exc` (or what caused it) is a resource running out: the disk
    under the data dir (507) or file descriptors (503); None for anything else."""
    for e in _causes(exc):
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in _NO_ROOM):
            return 507, "disk_full", (f"disk full under {data_dir}: writes are refused until space is freed "
                                      f"(reads still work): {e}")
        if isinstance(e, OutOfFilesError) or (isinstance(e, OSError) and e.errno in _NO_FILES):
            return 503, "too_many_open_files", ("the daemon has run out of open files (see `ulimit -n`); retry "
                                                f"shortly: {e}")
    return None


def _problem_from(exc: BaseException) -> tuple[int, str, str, str | None] | None:
    if isinstance(exc, ApiProblem):
        return exc.status, exc.code, exc.message, exc.field
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        return exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, None
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except (ApiProblem, web.HTTPException) as e:
        problem = _problem_from(e)
        if problem is None:
            raise
        return error_response(*problem)
    except AiosdError as e:
        return error_response(400 if e.exit_code == 2 else 500, type(e).__name__, str(e))
    except Exception as e:
        out = exhausted(e, request.app[DATA_DIR_KEY]) if DATA_DIR_KEY in request.app else None
        if out is None:
            log.exception("api handler failed", extra={"path": request.path, "method": request.method})
            return error_response(500, "internal", "internal error; see the daemon log")
        if request.app[REJECTIONS_KEY].reject(out[1], out[1], time.monotonic()):  # once per window
            log.warning("request refused: resource exhausted", extra={"path": request.path, "code": out[1],
                                                                      "error": out[2]})
        return error_response(*out)


def build_app(routes: list[Route], version: str, token: str | None = None, *,
              authenticate: Authenticate | None = None, local_role: str = "operator",
              audit: AuditHook | None = None, data_dir: Path | None = None) -> web.Application:
    """The app: every route behind the role check (auth.py); `token` is the node's admin token."""
    doc: dict[str, Any] = {}

    async def openapi_handler(_: web.Request) -> web.Response:
        return web.json_response(doc)

    routes = [*routes, Route("GET", "/v1/openapi.json", openapi_handler, "this API's OpenAPI document",
                             role="viewer")]
    doc.update(openapi(routes, version))
    middlewares = [error_middleware,
                   auth_middleware(routes, node_token=token, authenticate=authenticate, local_role=local_role,
                                   audit=audit)]
    app = web.Application(middlewares=middlewares, client_max_size=8 << 20)
    app[REJECTIONS_KEY] = RejectionLog()
    if data_dir is not None:
        app[DATA_DIR_KEY] = data_dir
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)
    return app


def ensure_token(data_dir: Path) -> str:
    """The bearer token for the TCP listener, created (0600) on first use."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _claim_socket(path: Path) -> None:
    """Remove a stale socket; refuse when a live process still serves on it."""
    if not path.exists() and not path.is_symlink():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except (TimeoutError, ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise AiosdError(f"another aiosd is already serving the API socket {path}; stop it or use --socket")


PLAIN_HOST = "127.0.0.1"


def tls_context(host: str, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The TCP listener's TLS context, or None for plain TCP (only on 127.0.0.1).

    Raises: ConfigError naming api.host / api.tls_cert / api.tls_key.
    """
    if (cert is None) != (key is None):
        raise ConfigError("api.tls_cert and api.tls_key go together: give both (PEM files) or neither")
    if cert is None or key is None:
        if host != PLAIN_HOST:
            raise ConfigError(f"api.host = {host!r}: the API listens on an address other than {PLAIN_HOST} only "
                              "with TLS; set api.tls_cert and api.tls_key (PEM), or use api.host = \"127.0.0.1\"")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise ConfigError(f"api.tls_cert / api.tls_key: {e.filename} does not exist") from None
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"api.tls_cert / api.tls_key: cannot load {cert} with {key}: {e}") from None
    return ctx


class ApiServer:
    """Async context manager that serves `routes` until closed."""

    def __init__(self, routes: list[Route], *, version: str, socket_path: Path, data_dir: Path,
                 tcp_port: int | None = None, tcp_host: str = PLAIN_HOST, tls_cert: Path | None = None,
                 tls_key: Path | None = None, authenticate: Authenticate | None = None,
                 local_role: str = "operator", audit: AuditHook | None = None) -> None:
        self._audit = audit
        self._authenticate = authenticate
        self._local_role = local_role
        self._routes = routes
        self._version = version
        self.socket_path = socket_path
        self._data_dir = data_dir
        self._tcp_port = tcp_port
        self._tcp_host = tcp_host
        # Checked before anything listens: a remote address without TLS never starts.
        self._ssl = tls_context(tcp_host, tls_cert, tls_key) if tcp_port is not None else None
        self._runner: web.AppRunner | None = None
        self.rejections = RejectionLog()  # the app's, once started (refusals, malformed HTTP, exhaustion)
        self.tcp_port_bound: int | None = None

    async def __aenter__(self) -> Self:
        token = ensure_token(self._data_dir) if self._tcp_port is not None else None
        app = build_app(self._routes, self._version, token, authenticate=self._authenticate,
                        local_role=self._local_role, audit=self._audit, data_dir=self._data_dir)
        self.edge = EdgeSettings()
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                                     **runner_kwargs(self.edge, app[REJECTIONS_KEY]))
        self.rejections = app[REJECTIONS_KEY]
        await self._runner.setup()
        try:
            _claim_socket(self.socket_path)
            await web.UnixSite(self._runner, str(self.socket_path)).start()
        except PermissionError:
            await self._runner.cleanup()
            raise AiosdError(f"cannot create the API socket {self.socket_path}: permission denied") from None
        except BaseException:
            await self._runner.cleanup()
            raise
        os.chmod(self.socket_path, SOCKET_MODE)
        try:
            os.chown(self.socket_path, -1, grp.getgrnam("aiosd").gr_gid)
        except (KeyError, PermissionError):
            pass  # no aiosd group on this machine: root (and the owner) only
        if self._tcp_port is not None:
            site = EdgeSite(self._runner, self._tcp_host, self._tcp_port, edge=self.edge,
                            rejections=app[REJECTIONS_KEY], ssl_context=self._ssl)
            await site.start()
            server = site._server  # aiohttp keeps the bound server private; port 0 needs it
            if server is not None and server.sockets:  # type: ignore[attr-defined]  # asyncio.Server
                self.tcp_port_bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("api listening", extra={"socket": str(self.socket_path), "tcp_port": self.tcp_port_bound})
        return self

    def edge_metrics(self) -> dict[str, Any]:
        """The TCP API's (and the socket's) edge counters (federation/edge.py)."""
        return edge_counters(self.rejections)

    async def stop_accepting(self) -> None:
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.socket_path.unlink(missing_ok=True)


__all__ = ["ApiServer", "build_app", "ensure_token", "exhausted", "tls_context"]
