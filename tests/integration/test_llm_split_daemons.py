"""A model split over the vDAG on real daemons: 2 nodes (process driver), `aiosd llm split --stages 2
--apply` of the tiny model from examples/llm, the official `openai` client against the entry node with
`model` = the vDAG's name: greedy text (streamed and not) equals the unsplit engine's; then a stage's
instance is killed -9 mid-generation and the text still equals the undisturbed run (history replay on the
stage's other replica).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

import aiohttp

from tests.daemons import Daemon
from tests.integration.test_controller_daemons import api, placements, start_cluster
from tests.integration.test_llm_openai_daemons import build_model, free_port
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(300)
PROMPT = "The lighthouse keeper climbed"
NAME = "tiny-split"


def reference(model: Path, n: int) -> str:
    from sdk.llm.engine import LLMEngine
    from sdk.llm.params import SamplingParams

    e = LLMEngine(str(model), max_batch=1, max_context=128)
    try:
        return e.submit(e.encode(PROMPT), SamplingParams(max_tokens=n, temperature=0)).result(60).text
    finally:
        e.close()


def stage_pids(d: Daemon, block: str) -> list[int]:
    pids = []
    for f in d.data_dir.rglob("instances/*/state.json"):
        try:
            st = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if st.get("block_id") == block:
            try:
                os.kill(int(st["pid"]), 0)
            except OSError:
                continue
            pids.append(int(st["pid"]))
    return pids


def healthy(nodes: list[Daemon], block: str) -> int:
    return sum(r["block_id"] == block and r["state"] == "healthy"
               for d in nodes for r in api(d, "GET", "/v1/ps", timeout_s=3.0)["instances"])


async def _disconnect_mid_stream(port: int, token: str) -> None:
    body = {"model": NAME, "prompt": PROMPT, "max_tokens": 100, "temperature": 0, "stream": True}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s, \
            s.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b"data: {"):
                break  # the first token came: hang up


def test_split_model_serves_openai_and_survives_a_killed_stage(tmp_path: Path, daemons: list[Daemon]) -> None:
    model = build_model(tmp_path)
    port = free_port()
    nodes = start_cluster(tmp_path, daemons, 2, per_node_env=[
        {"AIOSD_API_TCP_PORT": str(port), "HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "1"}])
    entry = nodes[0]
    r = entry.cli("llm", "split", str(model), "--stages", "2", "--name", NAME, "--max-context", "128",
                  "--threads", "1", "--cpus", "0.1", "--replicas", "2", "--step-timeout", "3", "--apply", "--json",
                  timeout_s=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["stages"] == [[0, 2], [2, 4]] and out["vdag"] == f"{NAME}:1.0-stable"
    blocks = out["blocks"]
    for b in blocks:
        wait_sync(lambda b=b: len(placements(entry, b)) == 2, timeout_s=30, interval_s=0.2)  # type: ignore[misc]
        wait_sync(lambda b=b: healthy(nodes, b) == 2, timeout_s=90, interval_s=0.5)  # type: ignore[misc]
    want = reference(model, 40)
    token = (entry.data_dir / "api.token").read_text().strip()
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0, timeout=90) as client:
        assert NAME in [m.id for m in client.models.list().data]
        got = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=40, temperature=0)
        assert got.choices[0].text == want and got.usage.completion_tokens >= 1
        t0 = time.monotonic()  # warm now (the entry loaded the tokenizer on the first request)
        chunks = [c.choices[0].text for c in client.completions.create(
            model=NAME, prompt=PROMPT, max_tokens=40, temperature=0, stream=True) if c.choices]
        took = time.monotonic() - t0
        assert "".join(chunks) == want and len([c for c in chunks if c]) > 5  # token by token
        # a client that goes away mid-stream stops the generation (no more vDAG tasks for it)
        asyncio.run(_disconnect_mid_stream(port, token))
        before = api(entry, "GET", "/v1/metrics")["vdags"][f"{NAME}:1.0-stable"]["requests"]
        time.sleep(1.0)
        after = api(entry, "GET", "/v1/metrics")["vdags"][f"{NAME}:1.0-stable"]["requests"]
        assert after - before <= 2, (before, after)  # the drop of its caches, at most
        chat = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=4, temperature=0)
        assert chat.choices[0].message.role == "assistant"
        with pytest.raises(openai.BadRequestError) as long_:
            client.completions.create(model=NAME, prompt="word " * 300, max_tokens=2)
        assert long_.value.body["code"] == "context_length_exceeded"

        # kill -9 the tail's instance next to the entry (the one serving: routes prefer local instances) a
        # third of the way in: the other replica takes over and rebuilds the cache by replaying the history
        victim = stage_pids(entry, blocks[1])[0]
        killer = threading.Timer(max(0.05, took / 3), os.kill, (victim, signal.SIGKILL))
        killer.start()
        try:
            again = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=40, temperature=0)
        finally:
            killer.cancel()
        extra: dict[str, Any] = again.model_extra or {}
        assert again.choices[0].text == want, extra
        assert extra.get("aiosd", {}).get("replays", 0) >= 1, (extra, took, victim)
        assert extra["aiosd"]["failover_pause_s"] < 30
        print(f"split: 40 tokens in {took:.2f}s; after kill -9 of {blocks[1]}: {extra['aiosd']}")

    # the entry node's inference_servers record lists the split model
    def served() -> bool:
        rows = entry.json("get", "inference_servers")
        recs = rows.get("items", []) if isinstance(rows, dict) else rows
        return any(NAME in rec.get("value", rec).get("models", []) for rec in recs if isinstance(rec, dict))

    wait_sync(served, timeout_s=20, interval_s=0.5)


@pytest.mark.long
def test_kill9_of_a_stage_node_mid_generation(tmp_path: Path, daemons: list[Daemon]) -> None:
    """3 nodes, 2 stages with 2 replicas each, the entry on the node without a head instance: the node
    serving the session's head is killed -9 mid-generation; the text equals the undisturbed run's and the
    stall stays bounded."""
    model = build_model(tmp_path)
    ports = [free_port() for _ in range(3)]
    nodes = start_cluster(tmp_path, daemons, 3, per_node_env=[
        {"AIOSD_API_TCP_PORT": str(p), "HF_HUB_OFFLINE": "1"} for p in ports])
    r = nodes[0].cli("llm", "split", str(model), "--stages", "2", "--name", NAME, "--max-context", "128",
                  "--threads", "1", "--cpus", "0.1", "--replicas", "2", "--step-timeout", "3", "--apply", "--json",
                  timeout_s=120)
    assert r.returncode == 0, r.stdout + r.stderr
    blocks = json.loads(r.stdout)["blocks"]
    for b in blocks:
        wait_sync(lambda b=b: len(placements(nodes[0], b)) == 2, timeout_s=30, interval_s=0.2)  # type: ignore[misc]
        wait_sync(lambda b=b: healthy(nodes, b) == 2, timeout_s=120, interval_s=0.5)  # type: ignore[misc]
    want = reference(model, 40)
    ids = {str(api(d, "GET", "/v1/status")["node_id"]): d for d in nodes}
    # the entry: the node without a head instance, so the session's head runs on another node
    me = next(n for n in ids if n not in placements(nodes[0], blocks[0]).values())
    entry = ids[me]
    port = ports[nodes.index(entry)]
    token = (entry.data_dir / "api.token").read_text().strip()
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0, timeout=90) as client:
        client.completions.create(model=NAME, prompt=PROMPT, max_tokens=4, temperature=0)  # warm up
        t0 = time.monotonic()
        assert client.completions.create(model=NAME, prompt=PROMPT, max_tokens=40, temperature=0).choices[0].text \
            == want
        took = time.monotonic() - t0
        trace = api(entry, "GET", f"/v1/vdags/{NAME}:1.0-stable")["trace"][-1]
        assert trace[0]["node"] != me, trace
        killed: list[str] = []

        def kill_serving_node() -> None:  # the node that served this session's latest step, not the entry
            last = api(entry, "GET", f"/v1/vdags/{NAME}:1.0-stable")["trace"][-1]
            served = [h["node"] for h in last if h["node"] != me]
            if served:
                killed.append(served[0])
                ids[served[0]].kill9()

        killer = threading.Timer(max(0.05, took / 3), kill_serving_node)
        killer.start()
        t1 = time.monotonic()
        try:
            again = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=40, temperature=0)
        finally:
            killer.cancel()
        extra: dict[str, Any] = again.model_extra or {}
        assert again.choices[0].text == want, extra
        total = time.monotonic() - t1
        assert killed, "the generation ended before the kill"
        assert extra["aiosd"]["replays"] >= 1 and extra["aiosd"]["failover_pause_s"] < 10, extra
        print(f"kill -9 of node {killed[0]} mid-generation: {extra['aiosd']}, 40 tokens in {total:.2f}s "
              f"(undisturbed {took:.2f}s)")
