"""examples/llm/block.py as a real block process on a unix socket: tasks over the SDK's msgpack contract.

Concurrent tasks decode together and give the same greedy tokens as one at a time; bad input answers
422 naming the field and the error type while the instance keeps serving; /metrics carries the llm_*
series; SIGTERM drains and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("torch")
pytest.importorskip("transformers")

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

from tests.unit.test_llm_engine import build_tiny_model
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
BLOCK = ROOT / "examples" / "llm" / "block.py"


class LlmInstance:
    def __init__(self, proc: asyncio.subprocess.Process, http: aiohttp.ClientSession, log: Path) -> None:
        self.proc, self.http, self.log = proc, http, log

    async def task(self, data: Any, session_id: str = "s", seq_no: int = 1) -> tuple[int, dict[str, Any]]:
        body = msgpack.packb({"session_id": session_id, "seq_no": seq_no,
                              "data": data if isinstance(data, str) else json.dumps(data)})
        async with self.http.post("http://block/v1/task", data=body,
                                  headers={"Content-Type": "application/msgpack"}) as r:
            return r.status, msgpack.unpackb(await r.read())

    async def output(self, data: Any, **kw: Any) -> dict[str, Any]:
        status, reply = await self.task(data, **kw)
        assert status == 200, reply
        out: dict[str, Any] = json.loads(reply["packets"][0]["data"])
        return out


# One block process for the module (torch + transformers start in seconds, not milliseconds); the SIGTERM
# test runs last.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.keeps_processes]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def instance(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LlmInstance]:
    model = build_tiny_model(tmp_path_factory.getbasetemp())
    d = Path(tempfile.mkdtemp(prefix="llm-", dir="/tmp"))  # unix socket paths must stay under 108 bytes
    sock, log = d / "b.sock", d / "block.log"
    ctx = {"block_id": "llm-1", "instance_id": "i-1",
           "block_init_data": {"model_path": str(model), "model_name": "tiny", "max_threads": 8},
           "block_init_settings": {"max_batch": 4, "max_queue": 2, "max_context": 128, "threads": 1},
           "block_init_parameters": {"temperature": 0.0, "max_tokens": 8}}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "AIOSD_INSTANCE_SOCKET": str(sock),
           "AIOSD_INSTANCE_CONTEXT": json.dumps(ctx)}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(BLOCK), env=env, stdout=out, stderr=out)
    http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                 timeout=aiohttp.ClientTimeout(total=60))
    inst = LlmInstance(proc, http, log)

    async def ready() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"block exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            async with http.get("http://block/health") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await eventually(ready, timeout_s=60)
        yield inst
    finally:
        await http.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(d, ignore_errors=True)


async def test_block_process_serves_concurrent_generations(instance: LlmInstance) -> None:
    prompts = ["The river begins", "To bake bread", "A network connects", "Numbers: one"]
    alone = [(await instance.output({"prompt": p}))["token_ids"] for p in prompts]
    together = await asyncio.gather(*(instance.output({"prompt": p}, seq_no=i) for i, p in enumerate(prompts)))
    assert [o["token_ids"] for o in together] == alone
    chat = await instance.output({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert chat["model"] == "tiny" and chat["usage"]["completion_tokens"] <= 3


async def test_bad_input_is_a_422_naming_the_field_and_serving_goes_on(instance: LlmInstance) -> None:
    cases = [({"prompt": "x", "max_tokens": 0}, "InvalidRequest", "data.max_tokens"),
             ({"prompt": "x", "temperature": -1}, "InvalidRequest", "data.temperature"),
             ({"messages": [{"role": "user"}]}, "InvalidRequest", "data.messages[0].content"),
             ({"prompt": "word " * 300}, "ContextTooLong", "context of 128 tokens"),
             ("{not json", "InvalidRequest", "data: not JSON")]
    for data, type_, text in cases:
        status, reply = await instance.task(data)
        assert status == 422 and reply["error"]["type"] == type_ and text in reply["error"]["message"], reply
    assert (await instance.output({"prompt": "still serving"}))["usage"]["completion_tokens"] >= 1


async def test_metrics_and_sigterm(instance: LlmInstance) -> None:
    await instance.output({"prompt": "count me"})
    async with instance.http.get("http://block/metrics") as r:
        text = await r.text()
    assert "llm_prompts_total" in text and "llm_kv_cache_capacity_bytes" in text
    assert "llm_time_to_first_token_seconds_count" in text
    instance.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(instance.proc.wait(), 30) == 0
