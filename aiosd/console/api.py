"""HTTP routes of the console: users and the audit trail (admin)."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aiosd.api.auth import PRINCIPAL
from aiosd.api.routes import ApiProblem, Route, json_ok, read_model, read_query
from aiosd.console.audit import MAX_QUERY, select
from aiosd.console.errors import ConsoleError
from aiosd.console.history import parse_query
from aiosd.console.service import ConsoleService
from aiosd.console.ui_api import ui_routes
from aiosd.console.users import NewUser


def _caller(request: web.Request) -> str:
    p = request.get(PRINCIPAL)
    return "unknown" if p is None else p.name


class AuditQuery(BaseModel):
    """`GET /v1/audit` query parameters."""

    model_config = ConfigDict(extra="ignore")
    since: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False, description="entries after this Unix time")
    user: str | None = Field(None, min_length=1, max_length=128, description="entries of this user only")
    limit: int = Field(MAX_QUERY, ge=1, le=MAX_QUERY, description="at most this many entries")
    scope: Literal["node", "network"] = Field("node", description="this node's trail or the network's")


def console_routes(svc: ConsoleService) -> list[Route]:
    async def h_create(request: web.Request) -> web.StreamResponse:
        body = await read_model(request, NewUser)
        try:
            rec, token = await svc.create_user(body, by=_caller(request))
        except ConsoleError as e:
            raise ApiProblem(e.status, "conflict" if e.status == 409 else "refused", str(e), e.field) from None
        return json_ok({**rec.public(), "token": token}, status=201)

    async def h_list(_: web.Request) -> web.StreamResponse:
        return json_ok({"users": [u.public() for u in await svc.users()]})

    async def h_revoke(request: web.Request) -> web.StreamResponse:
        try:
            rec = await svc.revoke_user(request.match_info["name"], by=_caller(request))
        except ConsoleError as e:
            code = {404: "not_found", 409: "conflict"}.get(e.status, "refused")
            raise ApiProblem(e.status, code, str(e), e.field) from None
        return json_ok(rec.public())

    async def h_whoami(request: web.Request) -> web.StreamResponse:
        p = request[PRINCIPAL]
        return json_ok({"name": p.name, "role": p.role, "via": p.via})

    async def h_audit(request: web.Request) -> web.StreamResponse:
        q = await read_query(request, AuditQuery)
        entries = select(await svc.audit_entries(network=q.scope == "network"), since=q.since, user=q.user,
                         limit=q.limit)
        return json_ok({"scope": q.scope, "entries": [e.model_dump() for e in entries]})

    async def h_history(request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        node = q.pop("node", svc.node_id)
        if node != svc.node_id:
            raise ApiProblem(404, "not_here", f"this node keeps only its own history; ask node {node}'s API",
                             "node")
        try:
            query = parse_query(q, time.time())
        except ConsoleError as e:
            raise ApiProblem(400, "bad_request", str(e), e.field) from None
        cols = await asyncio.to_thread(svc.history.query, query)
        return json_ok({"node": svc.node_id, "from": query.start, "to": query.end, "step": query.step,
                        "tier": query.tier.name, **cols})

    return [
        Route("GET", "/v1/metrics/history", h_history,
              "this node's metric history (?node=&from=&to=&step=&name=a,b): 10 s for 6 h, 1 min for 7 days",
              tag="console", role="viewer"),
        Route("GET", "/v1/audit", h_audit, "audit trail, newest first (?since=TS&user=&limit=&scope=node|network)",
              tag="console", role="admin", query=AuditQuery),
        Route("POST", "/v1/users", h_create, "create a user (body: {name, role}); its token is shown once",
              request=NewUser, tag="console", role="admin", status=201),
        Route("GET", "/v1/users", h_list, "users of the network and their roles (no tokens)", tag="console",
              role="admin"),
        Route("DELETE", "/v1/users/{name}", h_revoke, "revoke a user's token network-wide", tag="console",
              role="admin"),
        Route("GET", "/v1/whoami", h_whoami, "the caller's name and role", tag="console", role="viewer"),
        *ui_routes(),
    ]


__all__ = ["console_routes"]
