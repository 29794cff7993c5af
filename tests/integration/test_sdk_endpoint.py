"""The SDK task endpoint, end to end: example blocks run as real child processes on a unix socket."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pytest

from sdk import BlockContext, OnDataResult, PreProcessResult
from sdk.runner import TaskRunner
from sdk.server import InstanceServer
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo" / "block.py"
JOIN = ROOT / "examples" / "aios_compat" / "block.py"

# on_data waits on a gate that management("release") opens: lets a test fill the pool deterministically.
GATE_BLOCK = '''
import threading
from sdk import Block, OnDataResult, PreProcessResult

class GateBlock:
    def __init__(self, context):
        self.gate = threading.Event()

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data=None)]

    def on_data(self, entry):
        self.gate.wait(10)
        return True, OnDataResult(output={"seq_no": entry.packet.seq_no})

    def health(self):
        return {"status": "healthy"}

    def management(self, action, data):
        if action == "release":
            self.gate.set()
        return {"status": "success"}

Block(GateBlock).run()
'''


def _check(fn: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool] | bool]:
    """Pin eventually()'s type variable to bool (mypy cannot infer it through a coroutine function)."""
    return fn


class Instance:
    """One block process serving on a unix socket, with an aiohttp session bound to it."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: Path, log: Path,
                 session: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.sock = sock
        self.log = log
        self.http = session

    async def task(self, packet: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post("http://block/v1/task", data=msgpack.packb(packet),
                                  headers={"Content-Type": "application/msgpack"}) as r:
            assert r.content_type == "application/msgpack"
            return r.status, msgpack.unpackb(await r.read())

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"http://block{path}") as r:
            return r.status, await r.json()

    async def post_json(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(f"http://block{path}", data=json.dumps(body)) as r:
            return r.status, await r.json()

    async def metrics(self) -> dict[str, float]:
        async with self.http.get("http://block/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[re.sub(r'(block_id|instance_id)="[^"]*",?', "", name).replace("{}", "")] = float(value)
        return out


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="sdk-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env(sock: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOSD_INSTANCE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["AIOSD_INSTANCE_SOCKET"] = str(sock)
    env["AIOSD_INSTANCE_CONTEXT"] = json.dumps({
        "block_id": "blk-1", "instance_id": "blk-1-i0", "node_id": "n1", "cluster_id": "c1",
        "block_init_data": {"greeting": "hi"}, "block_init_parameters": {"prefix": ">"},
    })
    env.update(extra)
    return env


async def _start(script: Path, sockdir: Path, tmp_path: Path, **extra: str) -> Instance:
    sock = sockdir / "b.sock"
    log = tmp_path / "block.log"
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), env=_env(sock, **extra),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=log.open("wb"))
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))
    inst = Instance(proc, sock, log, session)

    async def ready() -> bool:
        assert proc.returncode is None, log.read_text()
        try:
            status, _ = await inst.get_json("/health")
        except aiohttp.ClientError:
            return False
        return status == 200

    try:
        await eventually(_check(ready), timeout_s=15)
    except BaseException:
        await _stop(inst)
        raise
    return inst


async def _stop(inst: Instance) -> None:
    await inst.http.close()
    if inst.proc.returncode is None:
        inst.proc.kill()
        await inst.proc.wait()


@pytest.fixture
async def echo(sockdir: Path, tmp_path: Path) -> AsyncIterator[Instance]:
    inst = await _start(ECHO, sockdir, tmp_path)
    yield inst
    await _stop(inst)


def _packet(seq: int, data: Any, files: list[bytes] = (), session: str = "s1") -> dict[str, Any]:  # type: ignore[assignment]  # tuple default is read-only
    return {"session_id": session, "seq_no": seq, "data": json.dumps(data),
            "files": [{"metadata": json.dumps({"i": i}), "file_data": f} for i, f in enumerate(files)],
            "frame_ptr": "", "output_ptr": "", "ts": time.time()}


async def test_echo_answers_200_tasks_with_files_intact(echo: Instance) -> None:
    rng = random.Random(5)
    sent = {seq: [rng.randbytes(rng.randint(0, 20_000)) for _ in range(rng.randint(0, 3))] for seq in range(200)}
    limit = asyncio.Semaphore(16)

    async def one(seq: int) -> None:
        async with limit:
            status, reply = await echo.task(_packet(seq, {"n": seq}, sent[seq]))
        assert status == 200, reply
        (out,) = reply["packets"]
        assert (out["session_id"], out["seq_no"]) == ("s1", seq)
        body = json.loads(out["data"])
        assert body["data"] == {"n": seq}
        assert body["greeting"] == "hi" and body["prefix"] == ">" and body["instance_id"] == "blk-1-i0"
        assert [(f["size"], f["sha256"]) for f in body["files"]] == [
            (len(b), hashlib.sha256(b).hexdigest()) for b in sent[seq]]
        assert [json.loads(f["metadata"]) for f in body["files"]] == [{"i": i} for i in range(len(sent[seq]))]

    await asyncio.gather(*(one(s) for s in range(200)))
    m = await echo.metrics()
    assert m["on_data_count"] == 200
    assert m["echo_file_bytes"] == sum(len(b) for fs in sent.values() for b in fs)


async def test_on_data_raising_answers_422_naming_block_and_type_then_serves(echo: Instance) -> None:
    status, reply = await echo.task(_packet(1, {"raise": "kaput"}))
    assert status == 422
    assert reply == {"ok": False, "error": {"type": "RuntimeError", "message": "kaput", "block_id": "blk-1",
                                            "stage": "on_data"}}
    status, reply = await echo.task(_packet(2, {"fine": True}))
    assert status == 200 and json.loads(reply["packets"][0]["data"])["data"] == {"fine": True}
    assert "block callback raised" in echo.log.read_text()


async def test_preprocess_returning_false_answers_422_preprocess_failed(echo: Instance) -> None:
    status, reply = await echo.task({"session_id": "s", "seq_no": 1, "data": "{not json"})
    assert status == 422
    assert reply["error"]["type"] == "PreprocessFailed" and reply["error"]["stage"] == "on_preprocess"
    assert "data is not JSON" in reply["error"]["message"]


async def test_bad_bodies_answer_400_naming_the_field_and_change_nothing(echo: Instance) -> None:
    async with echo.http.post("http://block/v1/task", data=b"\xc1\xc1") as r:
        assert r.status == 400
        err = msgpack.unpackb(await r.read())["error"]
        assert err["type"] == "BadRequest" and err["stage"] == "decode"
    for bad, field in [({"seq_no": "7"}, "packet.seq_no"), ({"data": 5}, "packet.data"),
                       ({"files": [{"file_data": "text"}]}, "packet.files[0].file_data"), ([1, 2], "packet")]:
        status, reply = await echo.task(bad)  # type: ignore[arg-type]  # deliberately malformed
        assert status == 400, bad
        assert reply["error"]["message"].startswith(field + ":"), reply
    status, reply = await echo.task({"data": "1", "extra_future_key": {"x": 1}})  # unknown keys ignored
    assert status == 200 and json.loads(reply["packets"][0]["data"])["count"] == 1
    m = await echo.metrics()
    assert m["tasks_bad_request"] == 5 and m["on_data_count"] == 1


async def test_full_queue_answers_503_busy_at_once_and_health_still_answers(
        sockdir: Path, tmp_path: Path) -> None:
    inst = await _start(gate_block_path(tmp_path), sockdir, tmp_path,
                        AIOSD_INSTANCE_WORKERS="1", AIOSD_INSTANCE_QUEUE="1")
    try:
        held = [asyncio.ensure_future(inst.task(_packet(i, {}))) for i in range(2)]

        async def both_admitted() -> bool:
            m = await inst.metrics()
            return m["tasks_inflight"] == 2 and m["queue_length"] == 1

        await eventually(_check(both_admitted), timeout_s=10)
        t0 = time.monotonic()
        status, reply = await inst.task(_packet(9, {}))
        busy_s = time.monotonic() - t0
        assert status == 503 and reply["error"]["type"] == "Busy", reply
        assert busy_s < 2.0  # the held tasks would take 10 s: this proves it did not wait
        assert (await inst.get_json("/health"))[0] == 200  # control calls do not queue behind tasks
        assert (await inst.post_json("/mgmt", {"mgmt_action": "release"}))[0] == 200
        results = await asyncio.wait_for(asyncio.gather(*held), 10)
        assert [(s, r["packets"][0]["seq_no"]) for s, r in results] == [(200, 0), (200, 1)]
        m = await inst.metrics()
        assert m['tasks_rejected{reason="busy"}'] == 1
    finally:
        await _stop(inst)


def gate_block_path(tmp_path: Path) -> Path:
    path = tmp_path / "gate_block.py"
    path.write_text(GATE_BLOCK)
    return path


async def test_health_set_parameters_and_mgmt_reach_the_callbacks(echo: Instance) -> None:
    assert await echo.get_json("/health") == (200, {"healthy": True, "detail": {"status": "healthy", "count": 0}})
    assert await echo.post_json("/setParameters", {"prefix": "new:"}) == (200, {"ok": True,
                                                                                "parameters": {"prefix": "new:"}})
    status, reply = await echo.task(_packet(1, "x"))
    assert json.loads(reply["packets"][0]["data"])["prefix"] == "new:"
    status, body = await echo.post_json("/setParameters", {"prefix": 3})
    assert status == 422 and body["ok"] is False
    assert body["error"] == {"type": "UpdateFailed", "message": "prefix must be a string", "block_id": "blk-1",
                             "stage": "on_update"}
    assert (await echo.post_json("/setParameters", [1]))[0] == 400
    assert await echo.post_json("/mgmt", {"mgmt_action": "get_count", "mgmt_data": None}) == (
        200, {"ok": True, "result": {"status": "success", "count": 1}})
    assert (await echo.post_json("/mgmt", {"mgmt_action": "reset"}))[1]["result"]["count"] == 0
    status, body = await echo.post_json("/mgmt", {"mgmt_data": 1})
    assert status == 400 and "mgmt_action" in body["error"]["message"]
    async with echo.http.post("http://block/mgmt", data=b"{oops") as r:
        assert r.status == 400


async def test_metrics_counts_match_the_tasks_sent(echo: Instance) -> None:
    for i in range(30):
        assert (await echo.task(_packet(i, i)))[0] == 200
    assert (await echo.task(_packet(99, {"raise": "x"})))[0] == 422
    assert (await echo.task({"data": "{bad"}))[0] == 422
    m = await echo.metrics()
    assert m["on_preprocess_count"] == 31  # the failed preprocess is not counted as done
    assert m["on_data_count"] == 30
    assert m["end_to_end_count"] == 30
    assert m["on_data_latency_count"] == 30
    assert m['callback_errors{stage="on_data"}'] == 1
    assert m['callback_errors{stage="on_preprocess"}'] == 1
    assert m["queue_length"] == 0
    for name in ("on_preprocess_latency_sum", "on_preprocess_fps", "on_data_fps", "end_to_end_fps",
                 "end_to_end_latency_sum"):
        assert name in m
    assert m["on_data_fps"] > 0


async def test_sigterm_stops_listening_and_exits_0(echo: Instance) -> None:
    assert (await echo.task(_packet(1, 1)))[0] == 200
    echo.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(echo.proc.wait(), 10) == 0
    log = echo.log.read_text()
    assert "instance stopping" in log and "instance stopped" in log
    assert not echo.sock.exists()


async def test_sigterm_with_a_stuck_task_exits_0_after_the_drain_deadline(sockdir: Path, tmp_path: Path) -> None:
    inst = await _start(gate_block_path(tmp_path), sockdir, tmp_path)
    try:
        stuck = asyncio.ensure_future(inst.task(_packet(1, {})))
        await eventually(_check(lambda: _inflight(inst)), timeout_s=10)
        t0 = time.monotonic()
        inst.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(inst.proc.wait(), 10) == 0
        assert 1.5 <= time.monotonic() - t0 < 8
        assert "drain deadline passed" in inst.log.read_text()
        with pytest.raises(aiohttp.ClientError):
            await stuck
    finally:
        await _stop(inst)


async def _inflight(inst: Instance) -> bool:
    return (await inst.metrics())["tasks_inflight"] == 1


async def test_aios_compat_block_joins_two_inputs_by_session_and_seq(sockdir: Path, tmp_path: Path) -> None:
    inst = await _start(JOIN, sockdir, tmp_path, AIOSD_INSTANCE_CONTEXT=json.dumps(
        {"block_id": "join-1", "block_init_parameters": {"scale": 1}}))
    try:
        for seq in range(20):  # the two inputs of each task, in either order
            a = _packet(seq, {"source": "a", "value": seq})
            b = _packet(seq, {"source": "b", "value": 100})
            first, second = (a, b) if seq % 2 else (b, a)
            assert await inst.task(first) == (200, {"ok": True, "packets": []})
            status, reply = await inst.task(second)
            assert status == 200
            out = json.loads(reply["packets"][0]["data"])
            assert out["sum"] == seq + 100 and out["seq_no"] == seq
            assert out["sources"] == [first_src(first), first_src(second)]
        # same seq_no in another session does not join with the first session
        assert (await inst.task(_packet(0, {"source": "a", "value": 1}, session="other")))[1]["packets"] == []
        assert (await inst.post_json("/setParameters", {"scale": 2}))[0] == 200
        await inst.task(_packet(50, {"source": "a", "value": 1}))
        status, reply = await inst.task(_packet(50, {"source": "b", "value": 2}))
        assert json.loads(reply["packets"][0]["data"])["sum"] == 6
        assert await inst.post_json("/mgmt", {"mgmt_action": "get_stats"}) == (
            200, {"ok": True, "result": {"status": "success", "joined": 21, "scale": 2.0}})
        m = await inst.metrics()
        assert m["muxer_pending"] == 1 and m["on_preprocess_count"] == 21 and m["end_to_end_count"] == 43
    finally:
        await _stop(inst)


def first_src(p: dict[str, Any]) -> str:
    return str(json.loads(p["data"])["source"])


async def test_tcp_port_zero_picks_a_port_and_logs_it(sockdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "tcp.log"
    env = _env(sockdir / "unused.sock", AIOSD_INSTANCE_PORT="0")
    del env["AIOSD_INSTANCE_SOCKET"]
    proc = await asyncio.create_subprocess_exec(sys.executable, str(ECHO), env=env, stderr=log.open("wb"))
    try:
        found = await eventually(lambda: re.search(r"instance listening .*port=(\d+)", log.read_text()),
                                 timeout_s=15)
        assert found is not None
        async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{found.group(1)}/v1/task",
                                                               data=msgpack.packb(_packet(1, "tcp"))) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_without_an_endpoint_run_prints_how_to_run_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOSD_INSTANCE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = await asyncio.create_subprocess_exec(sys.executable, str(ECHO), env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert b"AIOSD_INSTANCE_SOCKET" in err and b"BlockTester" in err
    env["AIOSD_INSTANCE_SOCKET"] = "/tmp/never-used.sock"
    env["AIOSD_INSTANCE_CONTEXT"] = '{"allocation_info": {"gpus": "all"}}'
    proc = await asyncio.create_subprocess_exec(sys.executable, str(ECHO), env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert b"AIOSD_INSTANCE_CONTEXT.allocation_info.gpus" in err


class _Gated:
    """In-process block whose on_data waits for the test to open `gate`."""

    gate = threading.Event()

    def __init__(self, context: BlockContext) -> None:
        pass

    def on_data(self, entry: PreProcessResult) -> tuple[bool, OnDataResult]:
        self.gate.wait(10)
        return True, OnDataResult(output="done")


async def test_in_process_server_drains_in_flight_tasks_and_refuses_new_ones(sockdir: Path) -> None:
    _Gated.gate = threading.Event()
    ctx = BlockContext(block_id="gated")
    server = InstanceServer(TaskRunner(_Gated(ctx), ctx), workers=1, queue_max=0, max_body_bytes=4096, drain_s=10)
    path = str(sockdir / "in.sock")
    await server.start_unix(path)
    http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path, limit=4))
    stopping: asyncio.Future[None] | None = None
    try:
        async with http.post("http://b/v1/task", data=b"\x00" * 8192) as r:
            assert r.status == 413
            assert msgpack.unpackb(await r.read())["error"]["type"] == "TooLarge"
        in_flight = asyncio.ensure_future(http.post("http://b/v1/task", data=msgpack.packb({"seq_no": 1})))
        await eventually(lambda: server.pool.admitted == 1, timeout_s=5)
        async with http.get("http://b/health") as r:  # a second, now idle, keep-alive connection
            assert r.status == 200
        stopping = asyncio.ensure_future(server.stop())
        await eventually(lambda: server.stopping, timeout_s=5)
        async with http.post("http://b/v1/task", data=msgpack.packb({"seq_no": 2})) as r:
            assert r.status == 503
            assert msgpack.unpackb(await r.read())["error"]["type"] == "ShuttingDown"
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as fresh:
            with pytest.raises(aiohttp.ClientConnectionError):  # the listener is closed
                await fresh.get("http://b/health")
        assert not stopping.done()  # still draining the in-flight task
        _Gated.gate.set()
        resp = await asyncio.wait_for(in_flight, 5)
        assert resp.status == 200
        assert msgpack.unpackb(await resp.read())["packets"][0]["data"] == '"done"'
        await asyncio.wait_for(stopping, 5)
        assert not os.path.exists(path)
    finally:
        _Gated.gate.set()
        await http.close()
        if stopping is not None:
            await stopping
        await server.stop()
