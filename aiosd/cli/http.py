"""A stdlib client for the local API: http.client over the unix socket, or 127.0.0.1 + bearer token.

The CLI answers at once because this module imports nothing but the standard library (no
aiohttp, no pydantic, no daemon models). The async `aiosd.client.Client` stays for the SDK and
the tests.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aiosd.errors import ApiError, DaemonNotRunning

DEFAULT_TIMEOUT_S = 30.0
_NOT_RUNNING = (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, socket.gaierror)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("aiosd", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class LocalApi:
    """`LocalApi(socket_path).request("GET", "/v1/status")`; or `LocalApi(url=..., token=...)`."""

    def __init__(self, socket_path: Path | None = None, *, url: str | None = None, token: str | None = None,
                 timeout_s: float | None = DEFAULT_TIMEOUT_S) -> None:
        if (socket_path is None) == (url is None):
            raise ValueError("give exactly one of socket_path or url")
        self.socket_path = socket_path
        self.url = url.rstrip("/") if url else None
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def where(self) -> str:
        return str(self.socket_path) if self.socket_path is not None else str(self.url)

    def _connection(self, timeout_s: float | None) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(self.socket_path, timeout_s)
        assert self.url is not None
        rest = self.url.split("://", 1)[-1]
        host, _, port = rest.partition(":")
        return http.client.HTTPConnection(host, int(port) if port else 80, timeout=timeout_s)

    def open(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None, *,
             content_type: str = "application/json", timeout_s: float | None = -1.0,
             length: int | None = None) -> http.client.HTTPResponse:
        """Send a request; return the response (status < 400) to read or stream. Raises: DaemonNotRunning,
        ApiError. A body given as an iterable is sent chunked (or with `length` as Content-Length)."""
        conn = self._connection(self.timeout_s if timeout_s == -1.0 else timeout_s)
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
            if isinstance(body, bytes):
                headers["Content-Length"] = str(len(body))
            elif length is not None:
                headers["Content-Length"] = str(length)
            else:
                headers["Transfer-Encoding"] = "chunked"
        try:
            conn.request(method, path, body=body, headers=headers,
                         encode_chunked=body is not None and not isinstance(body, bytes) and length is None)
            resp = conn.getresponse()
        except _NOT_RUNNING as e:
            conn.close()
            raise DaemonNotRunning.at(self.where) from e
        except TimeoutError:
            conn.close()
            raise ApiError(504, "timeout", f"the daemon did not answer {method} {path} in time") from None
        if resp.status >= 400:
            payload = resp.read()
            conn.close()
            raise _api_error(resp.status, payload)
        return resp

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                content_type: str = "application/json", timeout_s: float | None = -1.0) -> Any:
        """Send a request; return the decoded JSON answer (bytes when the answer is not JSON)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        resp = self.open(method, path, data, content_type=content_type, timeout_s=timeout_s)
        try:
            payload = resp.read()
        except TimeoutError:
            raise ApiError(504, "timeout", f"the daemon did not answer {method} {path} in time") from None
        finally:
            resp.close()
        if "json" in (resp.getheader("Content-Type") or ""):
            return json.loads(payload) if payload else None
        return payload

    def lines(self, path: str, *, timeout_s: float | None = None) -> Iterator[bytes]:
        """GET PATH and yield the answer line by line as it streams (logs -f, watch)."""
        resp = self.open("GET", path, timeout_s=timeout_s)
        try:
            while line := resp.readline():
                yield line
        finally:
            resp.close()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _api_error(status: int, payload: bytes) -> ApiError:
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    err = doc.get("error", {}) if isinstance(doc, dict) else {}
    err = err if isinstance(err, dict) else {}
    return ApiError(status, str(err.get("code", status)),
                    str(err.get("message", payload[:200].decode(errors="replace"))), err.get("field"))


__all__ = ["DEFAULT_TIMEOUT_S", "LocalApi"]
