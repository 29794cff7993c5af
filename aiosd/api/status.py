"""`GET /v1/status` and `GET /v1/healthz`: who this node is and whether it serves."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

from aiosd.api.routes import Route, json_ok


class PeerView(BaseModel):
    node_id: str
    addr: str
    state: str


class StatusResponse(BaseModel):
    node_id: str
    network_id: str
    cluster: str
    version: str
    uptime_s: float
    data_dir: str
    roles: list[str]
    peers: list[PeerView]


class HealthResponse(BaseModel):
    ok: bool


def status_routes(
    *, node_id: str, network_id: str, cluster: str, version: str, data_dir: Path, roles: list[str],
    started: float, peers: Callable[[], list[PeerView]],
) -> list[Route]:
    async def status(_: web.Request) -> web.Response:
        return json_ok(StatusResponse(
            node_id=node_id, network_id=network_id, cluster=cluster, version=version,
            uptime_s=round(time.monotonic() - started, 3), data_dir=str(data_dir), roles=roles, peers=peers(),
        ))

    async def healthz(_: web.Request) -> web.Response:
        return json_ok(HealthResponse(ok=True))

    return [
        Route("GET", "/v1/status", status, "node id, network, cluster, version, uptime, peers",
              response=StatusResponse),
        Route("GET", "/v1/healthz", healthz, "liveness: 200 while the daemon serves", response=HealthResponse),
    ]


__all__ = ["HealthResponse", "PeerView", "StatusResponse", "status_routes"]
