"""OpenAI endpoint TTFT vs calling the LLM block directly, same daemon, same run (issue 16: adds <= 5 ms p50).

One `aiosd run` (process driver), the tiny model (examples/llm/make_tiny_model.py) applied as a block.
Interleaved samples over the unix socket, max_tokens = 1 (so the whole answer is the first token):
  direct:  POST /v1/infer/block/llm-tiny-1 {"data": {"prompt", "max_tokens": 1}}
  openai:  POST /v1/completions {"model", "prompt", "max_tokens": 1}            (JSON answer)
  stream:  POST /v1/chat/completions stream=true: time to the first content chunk
Prints p50s, the added ms and ratios. Run: .venv/bin/python bench/llm_openai.py [--samples 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
BID = "llm-tiny-1"


def docs(model: Path) -> str:
    comp = json.loads((ROOT / "examples/llm/component.json").read_text())
    block = json.loads((ROOT / "examples/llm/block.json").read_text())
    v = block["body"]["spec"]["values"]
    v.update(minInstances=1, maxInstances=1)
    v["blockInitData"] = {"model_path": str(model), "model_name": "tiny-llama"}
    v["initSettings"] = {"dtype": "float32", "device": "cpu", "max_batch": 4, "max_queue": 8, "threads": 1}
    v["parameters"] = {"temperature": 0.0}
    return json.dumps(comp) + "\n" + json.dumps(block)


async def timed_json(s: aiohttp.ClientSession, path: str, body: Mapping[str, object]) -> float:
    t0 = time.perf_counter()
    async with s.post(f"http://aiosd{path}", json=body) as r:
        await r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - t0


async def timed_stream(s: aiohttp.ClientSession, body: dict[str, object]) -> float:
    t0 = time.perf_counter()
    first = 0.0
    async with s.post("http://aiosd/v1/chat/completions", json=body) as r:
        assert r.status == 200, r.status
        async for line in r.content:
            if not first and line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                first = time.perf_counter() - t0
    return first or (time.perf_counter() - t0)


async def bench(sock: Path, model: Path, samples: int) -> dict[str, float]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                     timeout=aiohttp.ClientTimeout(total=300)) as s:
        async with s.post("http://aiosd/v1/apply?wait=120", data=docs(model)) as r:
            doc = await r.json()
            assert doc["task"]["state"] == "succeeded", doc
        prompt = "The river begins"
        direct_body = {"data": {"prompt": prompt, "max_tokens": 1}}
        oai_body = {"model": BID, "prompt": prompt, "max_tokens": 1}
        chat_body = {"model": BID, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
                     "stream": True}
        for _ in range(5):  # warm up
            await timed_json(s, f"/v1/infer/block/{BID}", direct_body)
            await timed_json(s, "/v1/completions", oai_body)
        d, o, st = [], [], []
        for _ in range(samples):
            d.append(await timed_json(s, f"/v1/infer/block/{BID}", direct_body))
            o.append(await timed_json(s, "/v1/completions", oai_body))
            st.append(await timed_stream(s, chat_body))
    d50, o50, s50 = (statistics.median(x) * 1e3 for x in (d, o, st))
    return {"samples": samples, "direct_ttft_p50_ms": round(d50, 3), "openai_ttft_p50_ms": round(o50, 3),
            "openai_stream_ttft_p50_ms": round(s50, 3), "openai_added_ms": round(o50 - d50, 3),
            "stream_added_ms": round(s50 - d50, 3), "openai_ratio": round(o50 / d50, 3),
            "stream_ratio": round(s50 / d50, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aiosd-bo"))
    sock = tmp / "a.sock"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    subprocess.run([sys.executable, str(ROOT / "examples/llm/make_tiny_model.py"), str(tmp / "m")], env=env,
                   check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([sys.executable, "-m", "aiosd.cli", "run", "--data-dir", str(tmp / "d"), "--socket",
                             str(sock), "--p2p-host", "127.0.0.1", "--p2p-port", "0", "--driver", "process",
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "log", "wb"), start_new_session=True)  # noqa: SIM115
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("daemon did not start:\n" + (tmp / "log").read_text())
            time.sleep(0.05)
        print(json.dumps(asyncio.run(bench(sock, tmp / "m", args.samples)), indent=2))
        subprocess.run([sys.executable, "-m", "aiosd.cli", "delete", "block", BID, "--socket", str(sock),
                        "--data-dir", str(tmp / "d")], cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
