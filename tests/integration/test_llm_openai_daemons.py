"""The OpenAI endpoint on real daemons: 2 nodes in one cluster (process driver), the tiny LLM block
placed on one of them, the official `openai` client against the TCP API (bearer = the node's API
token) of the node that does NOT run it: chat and completion, streamed and not; OpenAI-shaped errors.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

import aiohttp

from tests.daemons import Daemon
from tests.integration.test_controller_daemons import api, placements, start_cluster
from tests.waiting import wait_sync

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_model(base: Path) -> Path:
    """examples/llm/make_tiny_model.py in a child process (its progress bars leave a thread behind)."""
    out = base / "tiny-llama"
    subprocess.run([sys.executable, str(ROOT / "examples/llm/make_tiny_model.py"), str(out)], check=True,
                   capture_output=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
                                                          "PATH": "/usr/bin:/bin"})
    return out


def llm_docs(model: Path) -> str:
    comp = json.loads((ROOT / "examples/llm/component.json").read_text())
    block = json.loads((ROOT / "examples/llm/block.json").read_text())
    v = block["body"]["spec"]["values"]
    v.update(minInstances=1, maxInstances=1)
    v["blockInitData"] = {"model_path": str(model), "model_name": "tiny-llama"}
    v["initSettings"] = {"dtype": "float32", "device": "cpu", "max_batch": 1, "max_queue": 1, "max_context": 128,
                         "threads": 1}
    v["parameters"] = {"temperature": 0.0, "max_tokens": 8}
    v["policyRulesSpec"] = [{"values": {"name": "resourceAllocator", "policyRuleURI": "policy.resourceAllocator.cpu:v1",
                                        "parameters": {"cpus": 0.1}, "settings": {"selection_mode": "spread"}}}]
    return json.dumps(comp) + "\n" + json.dumps(block)


def test_openai_client_against_a_node_that_does_not_run_the_block(tmp_path: Path, daemons: list[Daemon]) -> None:
    model = build_model(tmp_path)
    ports = [free_port(), free_port()]
    nodes = start_cluster(tmp_path, daemons, 2, per_node_env=[
        {"AIOSD_API_TCP_PORT": str(p), "HF_HUB_OFFLINE": "1"} for p in ports])
    spec = tmp_path / "llm.json"
    spec.write_text(llm_docs(model))
    r = nodes[0].cli("apply", "-f", str(spec), "--cluster", "--json", timeout_s=60)
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: len(placements(nodes[0], "llm-tiny-1")) == 1, timeout_s=30, interval_s=0.2)
    host_node = next(iter(placements(nodes[0], "llm-tiny-1").values()))
    ids = [str(api(d, "GET", "/v1/status")["node_id"]) for d in nodes]
    other = 1 - ids.index(host_node)
    wait_sync(lambda: any(r["state"] == "healthy" for r in api(nodes[1 - other], "GET", "/v1/ps")["instances"]),
              timeout_s=90, interval_s=0.5)
    token = (nodes[other].data_dir / "api.token").read_text().strip()
    with openai.OpenAI(base_url=f"http://127.0.0.1:{ports[other]}/v1", api_key=token, max_retries=0,
                       timeout=60) as client:
        check_endpoint(client, token, ports[other])

    # Inference servers registry: the node running the endpoint publishes {node, url, models, tags}
    def served() -> dict[str, Any] | None:
        rows = nodes[0].json("get", "inference_servers")
        recs = rows.get("items", []) if isinstance(rows, dict) else rows
        for rec in recs if isinstance(recs, list) else []:
            value = rec.get("value", rec)
            if value.get("node") == ids[0] and "llm-tiny-1" in value.get("models", []):
                return dict(value)
        return None

    rec = wait_sync(served, timeout_s=20, interval_s=0.5)
    assert rec is not None
    assert rec["url"] == f"http://127.0.0.1:{ports[0]}/v1" and "llm" in rec["tags"], rec


def check_endpoint(client: Any, token: str, port: int) -> None:

    assert [m.id for m in client.models.list().data] == ["llm-tiny-1"]
    chat = client.chat.completions.create(model="llm-tiny-1", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=5, temperature=0)
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert 1 <= chat.usage.completion_tokens <= 5 and chat.usage.total_tokens > chat.usage.completion_tokens
    # the component's name names the model too; streamed chunks add up to the unstreamed text (greedy)
    parts = list(client.chat.completions.create(model="llm", messages=[{"role": "user", "content": "hello"}],
                                                max_tokens=5, temperature=0, stream=True,
                                                stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    assert text == chat.choices[0].message.content
    assert parts[-1].usage is not None and parts[-1].usage.completion_tokens == chat.usage.completion_tokens
    comp = client.completions.create(model="tiny-llama", prompt="The river begins", max_tokens=6, temperature=0)
    assert comp.object == "text_completion" and comp.usage.completion_tokens >= 1
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="llm-tiny-1", prompt="The river begins", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == comp.choices[0].text

    # Bad input: OpenAI-shaped errors, the status the client maps
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["code"] == "model_not_found" and nf.value.body["param"] == "model"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"max_tokens": 0}, "max_tokens"), ({"temperature": -1}, "temperature"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"), ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role")]
    for extra, param in bad:
        kw: dict[str, Any] = {"model": "llm-tiny-1", "messages": [{"role": "user", "content": "x"}], **extra}
        with pytest.raises(openai.BadRequestError) as br:
            client.chat.completions.create(**kw)
        assert br.value.body["param"] == param and br.value.body["type"] == "invalid_request_error", br.value.body
    with pytest.raises(openai.BadRequestError) as long_:
        client.completions.create(model="llm-tiny-1", prompt="word " * 300, max_tokens=2)
    assert long_.value.body["code"] == "context_length_exceeded" and "128" in long_.value.body["message"]

    # Over capacity (max_batch 1 + max_queue 1): of 6 at once some get 429, the rest are served
    async def burst() -> list[int]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
            async def one(i: int) -> int:
                async with s.post(f"http://127.0.0.1:{port}/v1/completions",
                                  json={"model": "llm-tiny-1", "prompt": f"count {i}", "max_tokens": 100,
                                        "temperature": 0}) as resp:
                    body = await resp.json()
                    if resp.status == 429:
                        assert body["error"]["type"] == "rate_limit_error", body
                    return resp.status
            return list(await asyncio.gather(*(one(i) for i in range(6))))

    statuses = asyncio.run(burst())
    assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}, statuses
    # the block keeps serving
    again = client.completions.create(model="llm-tiny-1", prompt="The river begins", max_tokens=6, temperature=0)
    assert again.choices[0].text == comp.choices[0].text
