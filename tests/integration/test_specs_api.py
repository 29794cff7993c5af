"""The specs/runtime API of a real daemon (process driver): error shapes name fields and change
nothing; msgpack inference; the node-local instance API; logs and GPUs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pytest

from aiosd.client import Client
from aiosd.errors import ApiError
from tests.daemons import Daemon
from tests.instances import kill_process_instances
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo"
ECHO_TEXT = (ECHO / "component.json").read_text() + "\n" + (ECHO / "block.json").read_text()



@pytest.fixture(autouse=True)
def no_leftover_instances(tmp_path: Path) -> Iterator[None]:
    """Instances outlive a stopped daemon (for adoption): kill what a test left under its tmp_path."""
    yield
    kill_process_instances(tmp_path)


async def problem(c: Client, method: str, path: str, body: object = None, raw: bytes | None = None) -> ApiError:
    try:
        await c.request(method, path, body, raw=raw)
    except ApiError as e:
        return e
    raise AssertionError(f"{method} {path} succeeded")


async def test_api_errors_name_fields_and_change_nothing(daemons: list[Daemon], tmp_path: Path) -> None:
    d = Daemon(tmp_path, "n1", extra=["--driver", "process"]).start()
    daemons.append(d)
    async with Client(d.socket) as c:
        e = await problem(c, "POST", "/v1/apply", raw=b'{"header": ')
        assert e.status == 422 and "line 1" in str(e)
        bad = json.loads((ECHO / "block.json").read_text())
        bad["body"]["spec"]["values"]["minInstances"] = -1
        e = await problem(c, "POST", "/v1/apply", raw=json.dumps(bad).encode())
        assert e.status == 422 and e.field == "body.spec.values.minInstances"
        e = await problem(c, "POST", "/v1/apply?policy_overrides=nope", raw=ECHO_TEXT.encode())
        assert e.status == 422 and e.field == "policy_overrides"
        e = await problem(c, "POST", "/v1/infer/block/none", {"data": {}})
        assert e.status == 404 and e.field == "id"
        e = await problem(c, "PUT", "/v1/local/instances",
                          {"block_id": "b", "instances": [{"instance_id": "b-0", "block_dir": str(ECHO),
                                                           "gpus": {"count": -1}}]})
        assert e.status == 422 and e.field == "instances[0].gpus.count"
        e = await problem(c, "GET", "/v1/logs/nope")
        assert e.status == 404 and e.field == "instance"
        assert (await c.get("/v1/components"))["items"] == [] and (await c.get("/v1/local/instances")) == {
            "blocks": {}}
        assert isinstance((await c.get("/v1/gpus"))["gpus"], list)

        out = await c.request("POST", "/v1/apply?wait=60", raw=ECHO_TEXT.encode())
        assert out["task"]["state"] == "succeeded", out
        local = await c.get("/v1/local/instances")
        assert [s["instance_id"] for s in local["blocks"]["echo-1"]] == ["echo-1-0"]

        e = await problem(c, "POST", "/v1/infer/block/echo-1", {"data": {"message": "x"}, "files": [{}]})
        assert e.status == 422 and e.field == "files[0]"
        e = await problem(c, "POST", "/v1/mgmt/block/echo-1", {"service": "instances"})
        assert e.status == 422 and e.field == "mgmtCommand"
        e = await problem(c, "DELETE", "/v1/components/model.echo:1.0.0-stable")
        assert e.status == 409 and "echo-1" in str(e)

    conn = aiohttp.UnixConnector(path=str(d.socket))
    async with aiohttp.ClientSession(connector=conn) as s:
        pkt = msgpack.packb({"session_id": "s1", "seq_no": 7, "data": json.dumps({"message": "bin"}),
                             "files": [{"metadata": "m", "file_data": b"\x00\x01\x02"}]}, use_bin_type=True)
        async with s.post("http://aiosd/v1/infer/block/echo-1", data=pkt,
                          headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"}) as r:
            assert r.status == 200
            doc = msgpack.unpackb(await r.read(), raw=False)
        out = json.loads(doc["packets"][0]["data"])
        assert out["data"] == {"message": "bin"} and out["files"][0]["size"] == 3
        assert doc["packets"][0]["seq_no"] == 7 and doc["instance_id"] == "echo-1-0"
        async with s.get("http://aiosd/v1/logs/echo-1-0?tail=50") as r:
            assert r.status == 200
            assert (await r.text()).strip()

    async with Client(d.socket) as c:
        await c.delete("/v1/blocks/echo-1")
        await eventually(lambda: _empty(c), timeout_s=10)


async def _empty(c: Client) -> bool:
    return bool((await c.get("/v1/ps"))["instances"] == [] and (await c.get("/v1/blocks"))["items"] == [])
