"""The local API over a real unix socket (and 127.0.0.1 with a bearer token)."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from aiosd.api.admin import admin_routes
from aiosd.api.server import ApiServer
from aiosd.api.status import status_routes
from aiosd.client import Client
from aiosd.errors import AiosdError, ApiError, DaemonNotRunning


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="aiosd-api", dir="/tmp") as d:
        yield Path(d)


def routes(tmp_path: Path):  # type: ignore[no-untyped-def]
    return status_routes(node_id="n1", network_id="net", cluster="c", version="0.1.0", data_dir=tmp_path,
                         roles=["member"], started=time.monotonic(), peers=list) + admin_routes()


async def test_status_healthz_and_openapi_over_unix_socket(tmp_path: Path, sock_dir: Path) -> None:
    sock = sock_dir / "a.sock"
    async with ApiServer(routes(tmp_path), version="0.1.0", socket_path=sock, data_dir=tmp_path):
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        async with Client(sock) as c:
            st = await c.status()
            assert (st["node_id"], st["cluster"], st["peers"]) == ("n1", "c", [])
            assert (await c.get("/v1/healthz")) == {"ok": True}
            doc = await c.get("/v1/openapi.json")
            assert {"/v1/status", "/v1/healthz", "/v1/log-level"} <= set(doc["paths"])
            assert "StatusResponse" in doc["components"]["schemas"]
    assert not sock.exists()


async def test_malformed_bodies_get_json_errors_naming_the_field(tmp_path: Path, sock_dir: Path) -> None:
    sock = sock_dir / "a.sock"
    async with ApiServer(routes(tmp_path), version="0.1.0", socket_path=sock, data_dir=tmp_path), \
            Client(sock) as c:
        with pytest.raises(ApiError) as e:
            await c.request("PUT", "/v1/log-level", raw=b"{not json")
        assert (e.value.status, e.value.code) == (400, "bad_json")
        with pytest.raises(ApiError) as e:
            await c.put("/v1/log-level", {"level": "loud"})
        assert (e.value.status, e.value.field) == (422, "level")
        with pytest.raises(ApiError) as e:
            await c.put("/v1/log-level", {"level": "info", "extra": 1})
        assert e.value.field == "extra"
        with pytest.raises(ApiError) as e:
            await c.get("/v1/nope")
        assert e.value.status == 404
        assert (await c.put("/v1/log-level", {"level": "warning"})) == {"level": "warning"}


async def test_tcp_listener_requires_the_bearer_token(tmp_path: Path, sock_dir: Path) -> None:
    async with ApiServer(routes(tmp_path), version="0.1.0", socket_path=sock_dir / "a.sock", data_dir=tmp_path,
                         tcp_port=0) as api:
        port = api.tcp_port_bound
        token = (tmp_path / "api.token").read_text().strip()
        assert stat.S_IMODE(os.stat(tmp_path / "api.token").st_mode) == 0o600
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/v1/status") as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "unauthorized"
        async with Client(url=f"http://127.0.0.1:{port}", token=token) as c:
            assert (await c.status())["node_id"] == "n1"


async def test_a_live_socket_is_not_stolen(tmp_path: Path, sock_dir: Path) -> None:
    sock = sock_dir / "a.sock"
    async with ApiServer(routes(tmp_path), version="0.1.0", socket_path=sock, data_dir=tmp_path):
        with pytest.raises(AiosdError, match="already serving the API socket"):
            async with ApiServer(routes(tmp_path), version="0.1.0", socket_path=sock, data_dir=tmp_path):
                pass
        async with Client(sock) as c:  # the first server is untouched
            assert (await c.get("/v1/healthz"))["ok"]


async def test_a_stale_socket_file_is_replaced(tmp_path: Path, sock_dir: Path) -> None:
    import socket as s

    sock = sock_dir / "a.sock"
    stale = s.socket(s.AF_UNIX, s.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # file left behind, nobody listening
    async with ApiServer(routes(tmp_path), version="0.1.0", socket_path=sock, data_dir=tmp_path), \
            Client(sock) as c:
        assert (await c.get("/v1/healthz"))["ok"]


async def test_client_says_daemon_not_running(sock_dir: Path) -> None:
    async with Client(sock_dir / "none.sock") as c:
        with pytest.raises(DaemonNotRunning, match="aiosd is not running"):
            await c.status()
