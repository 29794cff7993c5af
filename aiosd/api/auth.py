"""Who is calling, and may they call this route: the API's authentication and role middleware.

- Unix socket: the peer's uid (SO_PEERCRED). root and the daemon's own user are admins; any other
  local user gets the configured `api.local_role`.
- TCP (127.0.0.1): `Authorization: Bearer <token>`. The node's api.token is an admin; any other token
  is resolved by `authenticate` (the console's users, network records). None, wrong or revoked → 401.
- Every route declares the role it needs (Route.role); a caller without it gets 403 naming that role,
  before the handler runs, so a refused request changes nothing. A route with no role needs admin.
- A state-changing request whose Origin is not this API's own (a page of another site) is refused:
  403, before anything else (CSRF). The API uses no cookies, so a forged request carries no token.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aiosd.api.routes import ROLES, Route, allows, error_response
from aiosd.errors import AiosdError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths served to anyone (the dashboard's static files: the page asks for a token itself).
PUBLIC_PREFIXES = ("/ui",)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: a user name, its role, and how it came in ("socket" or "token")."""

    name: str
    role: str
    via: str


Authenticate = Callable[[str], Awaitable[Principal | None]]
# Told of every state-changing request: (caller or None, method, route, path, HTTP status).
AuditHook = Callable[[Principal | None, str, str, str, int], None]
PRINCIPAL = web.RequestKey("principal", Principal)


def peer_uid(request: web.Request) -> int | None:
    """The uid of a unix-socket peer, or None when the request came over TCP."""
    if request.transport is None:
        return None
    sock = request.transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return -1
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def local_principal(uid: int, local_role: str, own_uid: int | None = None) -> Principal:
    own = os.getuid() if own_uid is None else own_uid
    if uid in (0, own):
        return Principal(f"uid:{uid}", "admin", "socket")
    return Principal(f"uid:{uid}", local_role, "socket")


def route_roles(routes: list[Route]) -> dict[tuple[str, str], str]:
    """(method, path) → the role each route needs; undeclared → admin."""
    return {(r.method, r.path): r.role or "admin" for r in routes}


def cross_origin(request: web.Request) -> bool:
    """A state-changing request sent by a page of another origin (CSRF)."""
    if request.method in SAFE_METHODS:
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin not in (f"http://{request.host}", f"https://{request.host}")


def auth_middleware(routes: list[Route], *, node_token: str | None, authenticate: Authenticate | None,
                    local_role: str = "operator", audit: AuditHook | None = None) -> Any:
    if local_role not in ROLES:
        raise ValueError(f"api.local_role must be one of {', '.join(ROLES)}, not {local_role!r}")
    needed = route_roles(routes)
    expected = f"Bearer {node_token}".encode() if node_token is not None else None

    async def who(request: web.Request) -> Principal | web.Response:
        if len(request.headers.getall("Authorization", [])) > 1:  # never "the first one wins"
            return error_response(400, "bad_request", "more than one Authorization header", "Authorization")
        uid = peer_uid(request)
        if uid is not None:
            return local_principal(uid, local_role)
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer ") or len(given) > 4096:
            return error_response(401, "unauthorized", "this API needs `Authorization: Bearer <token>` "
                                  "(a user token, or <data_dir>/api.token)")
        if expected is not None and hmac.compare_digest(given.encode(), expected):
            return Principal("node-token", "admin", "token")
        p = await authenticate(given[7:].strip()) if authenticate is not None else None
        if p is None:
            return error_response(401, "unauthorized", "unknown or revoked token")
        return p

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if audit is None or request.method in SAFE_METHODS:
            return await checked(request, handler)
        status = 500
        try:
            resp = await checked(request, handler)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        except AiosdError as e:
            status = 400 if e.exit_code == 2 else 500
            raise
        except Exception as e:
            status = int(getattr(e, "status", 500)) if isinstance(getattr(e, "status", None), int) else 500
            raise
        finally:
            resource = request.match_info.route.resource
            audit(request.get(PRINCIPAL), request.method, resource.canonical if resource else request.path,
                  request.path, status)

    async def checked(request: web.Request, handler: Any) -> web.StreamResponse:
        if cross_origin(request):
            return error_response(403, "cross_origin", f"a {request.method} from another origin "
                                  f"({request.headers.get('Origin')}) is refused", "Origin")
        if request.path.startswith(PUBLIC_PREFIXES) and request.method in SAFE_METHODS:
            resp: web.StreamResponse = await handler(request)
            return resp
        p = await who(request)
        if isinstance(p, web.Response):
            return p
        request[PRINCIPAL] = p
        resource = request.match_info.route.resource
        if resource is not None:
            role = needed.get((request.method, resource.canonical), "admin")
            if request.method == "HEAD":
                role = needed.get(("GET", resource.canonical), role)
            if not allows(p.role, role):
                return error_response(403, "role_required", f"{request.method} {resource.canonical} needs the "
                                      f"{role} role; {p.name} has the {p.role} role", "role")
        resp = await handler(request)
        return resp

    return check


__all__ = ["PRINCIPAL", "AuditHook", "Authenticate", "Principal", "auth_middleware", "cross_origin", "local_principal",
           "peer_uid", "route_roles"]
