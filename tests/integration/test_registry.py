"""The registry service in one real daemon: API, filter queries, SSE watch, bad input, restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from aiosd.client import Client
from aiosd.errors import ApiError
from tests.daemons import AIOSD, Daemon

pytestmark = pytest.mark.timeout(90)

GPU_NODES = {
    "a": {"name": "a", "gpus": [{"memory": 80}, {"memory": 24}], "labels": {"zone": "eu"}, "load": 0.5},
    "b": {"name": "b", "gpus": [{"memory": 16}], "labels": {"zone": "us"}, "load": 2.5},
    "c": {"name": "c", "gpus": [], "labels": {"zone": "eu-west"}, "load": "1.5"},
}


async def _problem(c: Client, method: str, path: str, body: object = None) -> ApiError:
    with pytest.raises(ApiError) as e:
        await c.request(method, path, body)
    return e.value


async def test_registry_api_filters_bad_input_and_restart(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, "n1").start()
    daemons.append(d)
    async with Client(d.socket) as c:
        tables = {t["table"]: t["count"] for t in (await c.get("/v1/registry"))["tables"]}
        assert {"nodes", "specs", "policies", "vdags", "inference_servers", "metrics", "tasks"} <= set(tables)
        for k, v in GPU_NODES.items():
            put = await c.put(f"/v1/registry/clusters/{k}", v)
            assert put["key"] == k and put["version"]["origin"] == (await c.status())["node_id"]
        got = await c.get("/v1/registry/clusters/a")
        assert got["value"] == GPU_NODES["a"]
        listed = await c.get("/v1/registry/clusters")
        assert [i["key"] for i in listed["items"]] == ["a", "b", "c"]

        async def query(doc: object) -> list[str]:
            out = await c.post("/v1/registry/clusters/query", doc)
            return [i["key"] for i in out["items"]]

        assert await query({"variable": "gpus.memory", "operator": ">=", "value": 24}) == ["a"]
        assert await query({"variable": "labels.zone", "operator": "LIKE", "value": "eu%"}) == ["a", "c"]
        assert await query({"logicalOperator": "OR", "conditions": [
            {"variable": "load", "operator": ">", "value": 2},
            {"variable": "name", "operator": "IN", "value": ["a"]}]}) == ["a", "b"]
        assert await query({"filter": {"variable": "load", "operator": "<", "value": "2"}}) == ["a", "c"]

        # Bad input: a clear 4xx naming the field, and nothing changes.
        e = await _problem(c, "POST", "/v1/registry/clusters/query", {"variable": "x", "operator": "~=", "value": 1})
        assert e.status == 400 and e.code == "bad_filter" and e.field is not None and "operator" in e.field
        e = await _problem(c, "POST", "/v1/registry/clusters/query",
                           {"logicalOperator": "XOR", "conditions": []})
        assert e.status == 400 and "logicalOperator" in (e.field or "")
        e = await _problem(c, "GET", "/v1/registry/nope")
        assert (e.status, e.field) == (404, "table")
        e = await _problem(c, "PUT", "/v1/registry/nope/x", {"a": 1})
        assert (e.status, e.field) == (404, "table")
        e = await _problem(c, "PUT", "/v1/registry/clusters/x", [1, 2])
        assert (e.status, e.field) == (422, "body")
        e = await _problem(c, "PUT", f"/v1/registry/clusters/{'k' * 300}", {"a": 1})
        assert e.status == 422 and e.field == "key"
        e = await _problem(c, "PUT", "/v1/registry/nodes/someone-else", {"a": 1})
        assert (e.status, e.code) == (403, "forbidden")
        e = await _problem(c, "GET", "/v1/registry/clusters/zz")
        assert (e.status, e.field) == (404, "key")
        e = await _problem(c, "GET", "/v1/registry/clusters?limit=0")
        assert (e.status, e.field) == (422, "limit")
        assert [i["key"] for i in (await c.get("/v1/registry/clusters"))["items"]] == ["a", "b", "c"]

        # nodes/<me> is this node's own record now (republished every few seconds): a member table instead.
        await c.put("/v1/registry/tasks/hello", {"hello": "world"})
        assert (await c.delete("/v1/registry/clusters/b")) == {"deleted": True}
        e = await _problem(c, "DELETE", "/v1/registry/clusters/b")
        assert e.status == 404
        before = (await c.get("/v1/registry/_digests"))["tables"]
        for moving in ("metrics", "nodes", "audit", "blocks", "inference_servers"):  # re-published by the node on its own
            before.pop(moving, None)
        assert before["clusters"]["count"] == 3  # a, c and b's tombstone

    # Every acknowledged write survives a restart, and the digests are rebuilt the same.
    d.stop()
    d.start()
    async with Client(d.socket) as c:
        assert [i["key"] for i in (await c.get("/v1/registry/clusters"))["items"]] == ["a", "c"]
        after = (await c.get("/v1/registry/_digests"))["tables"]
        for moving in ("metrics", "nodes", "audit", "blocks", "inference_servers"):
            after.pop(moving, None)
        assert after == before
        assert (await c.get("/v1/registry/tasks/hello"))["value"] == {"hello": "world"}


async def test_watch_streams_changes_as_server_sent_events(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, "n1").start()
    daemons.append(d)
    conn = aiohttp.UnixConnector(path=str(d.socket))
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=20)) as s, \
            Client(d.socket) as c:
        async with s.get("http://aiosd/v1/watch?table=specs") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            assert (await resp.content.readline()).startswith(b": watching")
            await c.put("/v1/registry/clusters/ignored", {"x": 0})  # another table: not streamed
            await c.put("/v1/registry/specs/s1", {"x": 1})
            await c.delete("/v1/registry/specs/s1")
            events: list[tuple[str, dict[str, object]]] = []
            async with asyncio.timeout(10):
                while len(events) < 2:
                    line = (await resp.content.readline()).decode().strip()
                    if line.startswith("event: "):
                        op = line.removeprefix("event: ")
                        data = json.loads((await resp.content.readline()).decode().removeprefix("data: "))
                        events.append((op, data))
        assert [(op, e["table"], e["key"]) for op, e in events] == [("put", "specs", "s1"), ("delete", "specs", "s1")]
        assert events[0][1]["value"] == {"x": 1}
        async with s.get("http://aiosd/v1/watch?table=bogus") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["field"] == "table"


async def test_metrics_api_prometheus_and_cli(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, "n1", env={"AIOSD_METRICS_INTERVAL_S": "0.5"}).start()
    daemons.append(d)
    async with Client(d.socket) as c:
        me = (await c.status())["node_id"]
        local = await c.get("/v1/metrics")
        assert local["node_id"] == me
        assert {"vcpu.load_15m", "memory.totalMem", "gpu.totalFreeMem", "disk.free",
                "network.rxBytesTotal"} <= set(local["metrics"])
        assert local["metrics"]["memory.totalMem"] > 0
        # The summary is in the replicated metrics table, reachable by AIOS dot paths.
        async with asyncio.timeout(10):
            while not (await c.get("/v1/registry/metrics"))["items"]:
                await asyncio.sleep(0.1)
        hits = await c.post("/v1/registry/metrics/query",
                            {"variable": "memory.totalMem", "operator": ">", "value": 1})
        assert [i["key"] for i in hits["items"]] == [me]
        none = await c.post("/v1/registry/metrics/query",
                            {"variable": "gpu.totalFreeMem", "operator": ">", "value": 10**9})
        assert none["items"] == []
        clusters = (await c.get("/v1/metrics/clusters"))["clusters"]
        (agg,) = clusters.values()
        assert agg["nodes"] == 1 and agg["memory.totalMem"] == pytest.approx(
            (await c.get(f"/v1/metrics/nodes/{me}"))["memory"]["totalMem"])
        async with asyncio.timeout(10):
            while len((await c.get("/v1/metrics/series/vcpu.load_1m"))["points"]) < 2:
                await asyncio.sleep(0.1)
        e = await _problem(c, "GET", "/v1/metrics/series/nope")
        assert (e.status, e.field) == (404, "name")
        text = await c.get("/metrics")
        assert isinstance(text, bytes)
        body = text.decode()
        assert f'aiosd_load15{{node="{me}"}}' in body and "# TYPE aiosd_replication_written_total counter" in body

    # CLI: registry with an inline filter and with a filter file; bad filter exits non-zero naming the field.
    await asyncio.to_thread(d.cli, "metrics")
    assert d.cli("registry", "specs").returncode == 0
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"variable": "memory.totalMem", "operator": ">", "value": 1}))
    out = d.json("registry", "metrics", "--filter", str(f))
    assert [i["key"] for i in out["items"]] == [me]
    bad = d.cli("registry", "metrics", "--filter", '{"variable": "a", "operator": "~", "value": 1}')
    assert bad.returncode != 0 and "operator" in bad.stderr
    missing = d.cli("registry", "metrics", "--filter", str(tmp_path / "nope.json"))
    assert missing.returncode != 0 and "--filter" in missing.stderr
    top = d.cli("top", "--once")
    assert top.returncode == 0 and me[:20] in top.stdout and "LOAD15" in top.stdout


async def test_cli_watch_prints_changes_and_stops_after_count(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, "n1").start()
    daemons.append(d)
    async with Client(d.socket) as c:  # the daemon's own services watch tables too (policy records)
        before = (await c.get("/v1/registry/_digests"))["stats"]["watchers"]
    proc = await asyncio.create_subprocess_exec(
        *AIOSD, "watch", "specs", "--count", "1", "--socket", str(d.socket), "--data-dir", str(d.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with Client(d.socket) as c:
        async with asyncio.timeout(20):
            while (await c.get("/v1/registry/_digests"))["stats"]["watchers"] < before + 1:
                await asyncio.sleep(0.05)
        await c.put("/v1/registry/specs/w1", {"x": 1})
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert out.decode().split() == ["put", "specs/w1", '{"x":1}']


def test_cli_get_reads_tables_with_filters_and_keeps_catalog_and_alias(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, "n1").start()
    daemons.append(d)

    async def seed() -> None:
        async with Client(d.socket) as c:
            for k, v in GPU_NODES.items():
                await c.put(f"/v1/registry/clusters/{k}", v)
            await c.put("/v1/registry/components/reg-only", {"uri": "x"})

    asyncio.run(seed())
    # `aiosd get TABLE`: a table (plain and --json), one key, inline and file filters.
    table = d.cli("get", "clusters")
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[:3] == ["KEY", "ORIGIN", "VALUE"] and "labels" in table.stdout
    assert [i["key"] for i in d.json("get", "clusters")["items"]] == ["a", "b", "c"]
    assert d.json("get", "clusters", "b")["value"] == GPU_NODES["b"]
    assert d.cli("get", "Clusters", "a").stdout.strip().startswith("{")
    inline = d.json("get", "clusters", "--filter", '{"variable": "labels.zone", "operator": "LIKE", "value": "eu%"}')
    assert [i["key"] for i in inline["items"]] == ["a", "c"]
    f = tmp_path / "gpu.json"
    f.write_text(json.dumps({"logicalOperator": "AND", "conditions": [
        {"variable": "gpus.memory", "operator": ">=", "value": 16},
        {"variable": "load", "operator": ">", "value": 1}]}))
    assert [i["key"] for i in d.json("get", "clusters", "--filter", str(f))["items"]] == ["b"]
    # Bad input: usage errors exit 2 with one sentence; a bad filter names the field.
    bad = d.cli("get", "clusters", "--filter", '{"variable": "a", "operator": "~", "value": 1}')
    assert bad.returncode == 2 and "filter.operator" in bad.stderr and "Traceback" not in bad.stderr
    unknown = d.cli("get", "widgets")
    assert unknown.returncode == 2 and "unknown kind 'widgets'" in unknown.stderr and "templates" in unknown.stderr
    missing = d.cli("get", "clusters", "--filter", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "--filter" in missing.stderr
    # `components`/`blocks` are the network's tables; --local is this node's catalog.
    assert d.json("get", "components", "--local")["kind"] == "components" and d.json("get", "blocks")["items"] == []
    assert [i["key"] for i in d.json("get", "components")["items"]] == ["reg-only"]
    assert [i["key"] for i in d.json("get", "components", "--registry")["items"]] == ["reg-only"]
    by_filter = d.json("get", "components", "--filter", '{"variable": "uri", "operator": "==", "value": "x"}')
    assert [i["key"] for i in by_filter["items"]] == ["reg-only"]
    # `aiosd registry` still works as the older name.
    assert d.json("registry", "clusters", "--filter", str(f)) == d.json("get", "clusters", "--filter", str(f))
    helptext = d.cli("get", "--help").stdout
    assert "aiosd get metrics --filter" in helptext and "Tables: assets" in helptext
