"""Issue 18: bad input to one real daemon's local API is refused clearly (no 500) and changes nothing.

Placements: an unknown block, a node over its instance bound, a block id whose instance ids would
not fit 128 characters; an inference to a placement nothing runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from aiosd.client import Client
from aiosd.controller.scheduler import MAX_INSTANCES_PER_NODE
from aiosd.errors import ApiError
from tests.daemons import Daemon, cli
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(120)
PLACE = "/v1/controller/placements"


def call(d: Daemon, method: str, path: str, body: Any = None) -> Any:
    async def go() -> Any:
        async with Client(d.socket, timeout_s=30) as c:
            return await c.request(method, path, body)

    return asyncio.run(go())


def refused(d: Daemon, method: str, path: str, body: Any = None) -> ApiError:
    with pytest.raises(ApiError) as e:
        call(d, method, path, body)
    return e.value


def test_placements_are_checked_and_bounded(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, "n1").start()
    daemons.append(d)
    e = refused(d, "POST", PLACE, {"block_id": "nope", "count": 1})
    assert e.status == 404 and e.field == "block_id" and "nope" in str(e)
    assert call(d, "GET", PLACE)["blocks"] == {}
    # A spec the Raft log cannot carry (found by schemathesis): 422, not 500.
    for bad in ({"block": {"n": 2**70}, "component": {}}, {"block": {"s": "\udb90"}, "component": {}}):
        e = refused(d, "POST", PLACE, {"block_id": "s", "count": 1, "spec": bad})
        assert e.status == 422 and e.field == "spec", e
    # A block id whose instance ids ("<id>-<n>", n < 10,000) would exceed 128 characters: 422, not 500.
    for n in (124, 127, 128):
        e = refused(d, "POST", PLACE, {"reserve_only": True, "block_id": "x" * n, "count": 1})
        assert e.status == 422 and e.field == "block_id" and "123" in str(e)
    ok = call(d, "POST", PLACE, {"reserve_only": True, "block_id": "y" * 123, "count": 2})
    assert [i["instance_id"] for i in ok["instances"]] == ["y" * 123 + "-0", "y" * 123 + "-1"]
    # One node holds at most MAX_INSTANCES_PER_NODE instances of all blocks together; the refusal
    # is a clear 409 and the cluster keeps answering (count 0 included).
    e = refused(d, "POST", PLACE, {"reserve_only": True, "block_id": "a", "count": MAX_INSTANCES_PER_NODE})
    assert e.status == 409 and str(MAX_INSTANCES_PER_NODE) in str(e)
    assert "a" not in call(d, "GET", PLACE)["blocks"]
    call(d, "POST", PLACE, {"reserve_only": True, "block_id": "a", "count": MAX_INSTANCES_PER_NODE - 2})
    assert call(d, "POST", PLACE, {"block_id": "a", "count": 0})["instances"] == []  # known now: no reserve_only
    assert call(d, "POST", PLACE, {"block_id": "a", "count": 3})["before"] == 0
    # An inference to a block placed without a spec says so (not 503 "starting").
    e = refused(d, "POST", "/v1/infer/block/a", {"data": {}})
    assert e.status == 409 and "without a spec" in str(e)
    assert "Traceback" not in d.logs()


@pytest.mark.podman
def test_image_push_takes_exact_tags_only_and_deleting_its_asset_frees_everything(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    from runtime.podman_conf import podman_env, write_containers_conf
    from tests.integration.test_runtime_support import CACHE, podman_usable

    why = podman_usable()
    if why or not Path("/bin/busybox").is_file():
        pytest.skip(why or "busybox-static is not installed")
    env = podman_env(write_containers_conf(CACHE))

    def podman(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, env=env, check=False)

    name = f"localhost/aiosd-h7-push:{os.getpid()}"
    ctx = tmp_path / "bb"
    ctx.mkdir()
    (ctx / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (ctx / "Containerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n')
    built = podman("build", "-q", "-t", name, str(ctx))
    if built.returncode != 0:
        pytest.skip(f"podman build does not work here: {built.stderr[-300:]}")
    image_id = podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
    d = Daemon(tmp_path, "n1").start()
    daemons.append(d)
    try:
        # podman resolves ids and id prefixes; push must not: 404, nothing published.
        for ref in ("0", image_id[:4], image_id, name.rsplit(":", 1)[0]):
            e = refused(d, "POST", "/v1/images/push", {"name": ref})
            assert e.status == 404, (ref, e)
        assert _images(d) == []
        rec = call(d, "POST", "/v1/images/push", {"name": name})
        blob = d.data_dir / "blobs" / "sha256" / rec["sha256"][:2] / rec["sha256"]
        assert blob.is_file()
        asset = call(d, "GET", f"/v1/assets/info?uri={quote(rec['uri'], safe='')}")
        manifest = d.data_dir / "blobs" / "sha256" / asset["manifest"][:2] / asset["manifest"]
        assert manifest.is_file()
        # Deleting the asset record removes the image record, the blob, the manifest, the holder record.
        assert call(d, "DELETE", f"/v1/registry/assets/{quote(rec['uri'], safe='')}")["deleted"]
        wait_sync(lambda: not blob.exists() and not manifest.exists(), timeout_s=10, interval_s=0.1)
        wait_sync(lambda: all(i.get("name") != name for i in _images(d)), timeout_s=10, interval_s=0.1)
        holders = call(d, "GET", "/v1/registry/nodes")
        assert rec["sha256"] not in json.dumps(holders)
    finally:
        podman("rmi", "-f", name)


def _images(d: Daemon) -> list[dict[str, Any]]:
    out = call(d, "GET", "/v1/images")
    rows: list[dict[str, Any]] = out["items"]
    return rows


def test_a_taken_p2p_port_is_one_clear_sentence_and_creates_nothing(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path, "n1", p2p_host="127.0.0.2").start()
    daemons.append(first)
    host, port = first.p2p_address().rsplit(":", 1)
    fresh = tmp_path / "n2"
    r = cli("run", "--data-dir", str(fresh), "--socket", str(tmp_path / "n2.sock"), "--p2p-host", host,
            "--p2p-port", port, timeout_s=30)
    assert r.returncode == 1, r.stderr
    assert f"{host}:{port}" in r.stderr and "--p2p-port" in r.stderr and "already in use" in r.stderr
    assert f"pid {first.pid}" in r.stderr  # psutil names the holder (we run as the same user)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert not fresh.exists()  # no half identity, no store


def test_openapi_describes_every_operation_and_bad_requests_are_refused(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, "n1", extra=["--api-port", str(_free_port())]).start()
    daemons.append(d)
    doc = call(d, "GET", "/v1/openapi.json")
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "the token in DATA_DIR/api.token"}
    assert doc["security"] == [{"bearer": []}]
    ops = [(p, m, op) for p, item in doc["paths"].items() for m, op in item.items()]
    assert len(ops) > 60
    for path, method, op in ops:
        ok = [c for c in op["responses"] if c.startswith("2")]
        assert len(ok) == 1 and "content" in op["responses"][ok[0]], (method, path)
        assert {"400", "404", "422", "503", "507"} <= set(op["responses"]), (method, path)
    assert "201" in doc["paths"]["/v1/tokens"]["post"]["responses"]
    limit = next(p for p in doc["paths"]["/v1/registry/{table}"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["in"] == "query" and limit["schema"]["anyOf"][0]["maximum"] == 100_000
    assert doc["paths"]["/v1/controller/placements"]["post"]["requestBody"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/PlacementBody"}
    # A template record is validated as one (the policy service would skip anything else).
    e = refused(d, "PUT", "/v1/registry/templates/k", {"anything": 1})
    assert e.status == 422 and "TemplateRecord" in str(e)
    good = {"templateUri": "tpl.demo:v1", "templatePolicyRuleUri": "policy.demo:v1"}
    e = refused(d, "PUT", "/v1/registry/templates/other:v1", good)
    assert e.status == 422 and "own id" in str(e)
    assert call(d, "PUT", "/v1/registry/templates/tpl.demo:v1", good)["key"] == "tpl.demo:v1"
    # Query parameters: typed models, in the document, and a bad one is a 422 naming it.
    logs = {p["name"]: p for p in doc["paths"]["/v1/logs/{instance}"]["get"]["parameters"] if p["in"] == "query"}
    assert logs["tail"]["schema"]["maximum"] == 10_000 and set(logs) == {"tail", "follow"}
    assert {p["name"] for p in doc["paths"]["/v1/apply"]["post"]["parameters"]} >= {"dry_run", "wait", "specUri"}
    for path, method, field in (("/v1/logs/x?tail=abc", "GET", "tail"), ("/v1/logs/x?follow=maybe", "GET", "follow"),
                                ("/v1/tasks/x/wait?timeout_s=-1", "POST", "timeout_s"),
                                ("/v1/apply?wait=nan", "POST", "wait"), ("/v1/blocks?full=2", "GET", "full"),
                                ("/v1/assets?chunk_bytes=12", "POST", "chunk_bytes")):
        e = refused(d, method, path)
        assert (e.status, e.field) == (422, field), (path, e)
    assert call(d, "GET", "/v1/blocks?full=")["items"] == []  # empty flag: false, as before


def test_two_authorization_headers_are_400(tmp_path: Path, daemons: list[Daemon]) -> None:
    import socket as _socket

    d = Daemon(tmp_path, "n1", extra=["--api-port", str(_free_port())]).start()
    daemons.append(d)
    port = int(next(a for a in d.extra if a.isdigit()))
    token = (d.data_dir / "api.token").read_text().strip()
    with _socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Authorization: Bearer wrong\r\nConnection: close\r\n\r\n".encode())
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 400") and "Authorization" in answer


def _free_port() -> int:
    import socket as _socket

    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_parses_and_exports_envelope_rejections(tmp_path: Path, daemons: list[Daemon]) -> None:
    from tests.unit.test_prometheus_names import check_exposition

    d = Daemon(tmp_path, "n1").start()
    daemons.append(d)
    body = call(d, "GET", "/metrics")
    kinds = check_exposition(body.decode() if isinstance(body, bytes) else str(body))
    rejected = [k for k, t in kinds.items() if k.startswith("aiosd_envelopes_rejected_") and t == "counter"]
    assert len(rejected) >= 10 and "aiosd_envelopes_rejected_unknown_kind" in rejected
    assert kinds["aiosd_memory_available_bytes"] == "gauge" and kinds["aiosd_metrics_samples"] == "counter"
    # The JSON API keeps the AIOS names.
    assert "memory.freeMem" in call(d, "GET", "/v1/metrics")["metrics"]


