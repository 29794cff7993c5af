"""Split model over the vDAG vs the unsplit block, same daemon, same run (issue 16: 2-stage >= 0.85x tok/s,
per-token per-hop overhead <= 1 ms p50).

One `aiosd run` (process driver), the tiny model (examples/llm/make_tiny_model.py) applied twice: as the
unsplit LLM block and split in 2 stage blocks chained by a vDAG (aiosd.llm.split, as `aiosd llm split`
makes them). Interleaved OpenAI completions over the unix socket, greedy, the same prompt and max_tokens:
  unsplit: POST /v1/completions {"model": "llm-tiny-1"}
  split:   POST /v1/completions {"model": "tiny-split"}    (one vDAG task per token: entry -> s0 -> s1 -> entry)
Prints tok/s of each (median over samples), the ratio, and the added ms per token per hop
((split - unsplit) seconds per token / (stages + 1) messages). Both answers must be the same text.
Run: .venv/bin/python bench/llm_split.py [--samples 10 --tokens 32]
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
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiosd.llm.split import split_documents
from bench.llm_openai import docs as unsplit_docs

BID = "llm-tiny-1"
SPLIT = "tiny-split"


async def timed(s: aiohttp.ClientSession, model: str, tokens: int) -> tuple[float, str, int]:
    body = {"model": model, "prompt": "The lighthouse keeper climbed", "max_tokens": tokens, "temperature": 0}
    t0 = time.perf_counter()
    async with s.post("http://aiosd/v1/completions", json=body) as r:
        doc = await r.json()
        assert r.status == 200, doc
    return time.perf_counter() - t0, doc["choices"][0]["text"], int(doc["usage"]["completion_tokens"])


async def bench(sock: Path, model: Path, samples: int, tokens: int) -> dict[str, float]:
    comp = json.loads((ROOT / "examples/llm-stage/component.json").read_text())
    split = split_documents(comp, SPLIT, str(model), [(0, 2), (2, 4)], max_context=256, threads=1, cpus=0.1)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                     timeout=aiohttp.ClientTimeout(total=300)) as s:
        for text in (unsplit_docs(model), json.dumps(split)):
            async with s.post("http://aiosd/v1/apply?wait=120", data=text) as r:
                doc = await r.json()
                assert r.status == 200 and doc["task"]["state"] == "succeeded", doc
        for _ in range(2):  # warm up (the entry loads the tokenizer on the first split request)
            await timed(s, BID, tokens)
            await timed(s, SPLIT, tokens)
        u, p = [], []
        for _ in range(samples):
            tu, text_u, nu = await timed(s, BID, tokens)
            tp, text_p, np_ = await timed(s, SPLIT, tokens)
            assert text_u == text_p and nu == np_, (text_u, text_p)
            u.append(nu / tu)
            p.append(np_ / tp)
    u50, p50 = statistics.median(u), statistics.median(p)
    hops = 3  # entry -> s0, s0 -> s1, s1 -> entry
    return {"samples": samples, "tokens": tokens, "unsplit_tok_s": round(u50, 2), "split_tok_s": round(p50, 2),
            "split_ratio": round(p50 / u50, 3),
            "added_ms_per_token_per_hop": round((1 / p50 - 1 / u50) * 1e3 / hops, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aiosd-bs"))
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
        print(json.dumps(asyncio.run(bench(sock, tmp / "m", args.samples, args.tokens)), indent=2))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
