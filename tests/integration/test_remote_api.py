"""The remote API: a listener off 127.0.0.1 serves only HTTPS with a bearer token, against a real daemon."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.daemons import Daemon

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.2"  # loopback, but not 127.0.0.1: the rule treats it as a remote address


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _ca_and_server(d: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for HOST signed by it: (ca.pem, server.pem, server.key)."""
    ca_key, ca, key, csr, cert, ext = (d / f"{name}-{x}" for x in ("ca.key", "ca.pem", "srv.key", "srv.csr",
                                                                      "srv.pem", "ext.cnf"))
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", f"/CN={name} test CA")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", "/CN=aiosd api")
    ext.write_text(f"subjectAltName=IP:{HOST}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "1", "-out", str(cert), "-extfile", str(ext))
    return ca, cert, key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None, ctx: ssl.SSLContext | None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_remote_api_needs_tls_and_a_token(tmp_path: Path, daemons: list[Daemon]) -> None:
    port = _free_port()
    remote = {"AIOSD_API_HOST": HOST, "AIOSD_API_TCP_PORT": str(port)}

    # Plain TCP off 127.0.0.1 is refused at start, with a sentence naming the keys to set.
    plain = Daemon(tmp_path, "plain", env=remote)
    with pytest.raises(AssertionError, match="exited") as refused:
        plain.start(timeout_s=60)
    assert "api.host" in str(refused.value) and "api.tls_cert" in str(refused.value)
    assert "Traceback" not in str(refused.value)

    ca, cert, key = _ca_and_server(tmp_path, "net")
    d = Daemon(tmp_path, "n1", env={**remote, "AIOSD_API_TLS_CERT": str(cert), "AIOSD_API_TLS_KEY": str(key)})
    d.start(timeout_s=60)
    daemons.append(d)
    token = (d.data_dir / "api.token").read_text().strip()
    trusting = ssl.create_default_context(cafile=str(ca))
    url = f"https://{HOST}:{port}/v1/status"

    status, body = _get(url, token, trusting)  # the client verifies the server against its CA
    assert status == 200 and body["node_id"] == d.json("status")["node_id"]
    status, body = _get(url, None, trusting)
    assert status == 401 and body["error"]["code"] == "unauthorized"  # type: ignore[index]  # JSON
    status, _ = _get(url, "wrong", trusting)
    assert status == 401

    # A client that trusts another CA refuses the server; a plain-HTTP client gets no answer.
    other_ca, _, _ = _ca_and_server(tmp_path, "other")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(url, token, ssl.create_default_context(cafile=str(other_ca)))
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _get(f"http://{HOST}:{port}/v1/status", token, None)
    assert d.proc is not None and d.proc.poll() is None  # the daemon is unaffected


def test_a_tls_cert_without_its_key_is_refused(tmp_path: Path) -> None:
    from aiosd.api.server import tls_context
    from aiosd.errors import ConfigError

    with pytest.raises(ConfigError, match="go together"):
        tls_context(HOST, tmp_path / "c.pem", None)
    with pytest.raises(ConfigError, match="does not exist"):
        tls_context(HOST, tmp_path / "c.pem", tmp_path / "k.pem")
    (tmp_path / "c.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="cannot load"):
        tls_context(HOST, tmp_path / "c.pem", tmp_path / "c.pem")
    assert tls_context("127.0.0.1", None, None) is None
