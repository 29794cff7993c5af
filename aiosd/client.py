"""A small client for the local API (unix socket or 127.0.0.1 + bearer token).

The CLI, the Python SDK and the tests all talk to the daemon through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import aiohttp

from aiosd.errors import ApiError, DaemonNotRunning

DEFAULT_TIMEOUT_S = 30.0


class Client:
    """`async with Client(socket_path) as c: await c.get("/v1/status")`."""

    def __init__(self, socket_path: Path | None = None, *, url: str | None = None, token: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if (socket_path is None) == (url is None):
            raise ValueError("give exactly one of socket_path or url")
        self.socket_path = socket_path
        self._base = url.rstrip("/") if url else "http://aiosd"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector: aiohttp.BaseConnector = (
            aiohttp.UnixConnector(path=str(self.socket_path)) if self.socket_path else aiohttp.TCPConnector()
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def where(self) -> str:
        return str(self.socket_path) if self.socket_path else self._base

    async def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                      content_type: str = "application/json") -> Any:
        """Send a request; return the decoded JSON answer. Raises: DaemonNotRunning, ApiError."""
        if self._session is None:
            raise RuntimeError("use `async with Client(...)` before sending requests")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self._session.request(method, self._base + path, data=data, headers=headers) as resp:
                payload = await resp.read()
                ctype = resp.headers.get("Content-Type", "")
                status = resp.status
        except (aiohttp.ClientConnectorError, FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonNotRunning.at(self.where) from e
        except TimeoutError:
            raise ApiError(504, "timeout", f"the daemon did not answer {method} {path} in time") from None
        decoded: Any = payload
        if "json" in ctype:
            decoded = json.loads(payload) if payload else None
        if status >= 400:
            err = decoded.get("error", {}) if isinstance(decoded, dict) else {}
            raise ApiError(status, str(err.get("code", status)), str(err.get("message", payload[:200])),
                           err.get("field"))
        return decoded

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.get("/v1/status")
        return result


__all__ = ["Client"]
