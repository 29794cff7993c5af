"""The local API server: aiohttp on a unix socket (mode 0660) and, optionally, 127.0.0.1:PORT.

Who may call what is auth.py's: the socket by peer uid, TCP by bearer token (the node's api.token in
the data dir, mode 0600, is an admin; user tokens come from the console). Every failure inside a handler becomes `{"error": {code, message, field}}`.
"""

from __future__ import annotations

import grp
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from aiosd.api.auth import AuditHook, Authenticate, auth_middleware
from aiosd.api.routes import ApiProblem, Route, error_response, openapi
from aiosd.errors import AiosdError

log = logging.getLogger(__name__)

TOKEN_FILE = "api.token"
SOCKET_MODE = 0o660


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
    except Exception:
        log.exception("api handler failed", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal", "internal error; see the daemon log")


def build_app(routes: list[Route], version: str, token: str | None = None, *,
              authenticate: Authenticate | None = None, local_role: str = "operator",
              audit: AuditHook | None = None) -> web.Application:
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


class ApiServer:
    """Async context manager that serves `routes` until closed."""

    def __init__(self, routes: list[Route], *, version: str, socket_path: Path, data_dir: Path,
                 tcp_port: int | None = None, authenticate: Authenticate | None = None,
                 local_role: str = "operator", audit: AuditHook | None = None) -> None:
        self._audit = audit
        self._authenticate = authenticate
        self._local_role = local_role
        self._routes = routes
        self._version = version
        self.socket_path = socket_path
        self._data_dir = data_dir
        self._tcp_port = tcp_port
        self._runner: web.AppRunner | None = None
        self.tcp_port_bound: int | None = None

    async def __aenter__(self) -> Self:
        token = ensure_token(self._data_dir) if self._tcp_port is not None else None
        app = build_app(self._routes, self._version, token, authenticate=self._authenticate,
                        local_role=self._local_role, audit=self._audit)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
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
            site = web.TCPSite(self._runner, "127.0.0.1", self._tcp_port)
            await site.start()
            server = site._server  # aiohttp keeps the bound server private; port 0 needs it
            if server is not None and server.sockets:  # type: ignore[attr-defined]  # asyncio.Server
                self.tcp_port_bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("api listening", extra={"socket": str(self.socket_path), "tcp_port": self.tcp_port_bound})
        return self

    async def stop_accepting(self) -> None:
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.socket_path.unlink(missing_ok=True)


__all__ = ["ApiServer", "build_app", "ensure_token"]
