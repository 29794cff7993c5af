"""SDK task endpoint: 1 KB task round trips (p50/p99, tasks/s with concurrency) and 1 MB payload MB/s.

Drives examples/echo/block.py, started as a real child process on a unix socket, with an aiohttp client.
Baseline in the same run: a bare aiohttp server (no SDK: decode msgpack, sha256 the files, reply) on the
same kind of socket, so `ratio` is the SDK's cost over plain aiohttp + msgpack on this machine.
Run: .venv/bin/python bench/sdk_endpoint.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

ROOT = pathlib.Path(__file__).resolve().parents[1]
ECHO = ROOT / "examples" / "echo" / "block.py"

BASELINE = '''
import hashlib, json, os, msgpack
from aiohttp import web

async def task(request):
    p = msgpack.unpackb(await request.read(), raw=False)
    files = [{"size": len(f["file_data"]), "sha256": hashlib.sha256(f["file_data"]).hexdigest()}
             for f in p.get("files", [])]
    out = dict(p, data=json.dumps({"data": json.loads(p["data"]), "files": files}), files=[])
    return web.Response(body=msgpack.packb({"ok": True, "packets": [out]}), content_type="application/msgpack")

async def health(request):
    return web.json_response({"healthy": True})

app = web.Application(client_max_size=64 << 20)
app.router.add_post("/v1/task", task)
app.router.add_get("/health", health)
web.run_app(app, path=os.environ["AIOSD_INSTANCE_SOCKET"], print=None, access_log=None)
'''


def packet(seq: int, data: str, files: list[bytes]) -> bytes:
    return msgpack.packb({"session_id": "bench", "seq_no": seq, "data": data,  # type: ignore[no-any-return]
                          "files": [{"metadata": "{}", "file_data": f} for f in files], "ts": time.time()})


async def start(script: pathlib.Path, sock: pathlib.Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOSD_INSTANCE_SOCKET": str(sock),
           "AIOSD_INSTANCE_CONTEXT": json.dumps({"block_id": "bench-echo"}), "AIOSD_INSTANCE_QUEUE": "256"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), env=env,
                                                stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as http:
        while True:
            try:
                async with http.get("http://b/health") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or proc.returncode is not None:
                raise RuntimeError(f"{script.name} did not become healthy")
            await asyncio.sleep(0.05)


async def measure(sock: pathlib.Path, quick: bool) -> dict[str, float]:
    n_seq, n_conc, n_big = (300, 1000, 20) if quick else (2000, 6000, 100)
    small = json.dumps({"blob": "x" * 1000})  # ~1 KB task
    big = os.urandom(1 << 20)
    conn = aiohttp.UnixConnector(path=str(sock), limit=64)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def call(body: bytes) -> None:
            async with http.post("http://b/v1/task", data=body,
                                 headers={"Content-Type": "application/msgpack"}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"task answered {r.status}")

        bodies = [packet(i, small, []) for i in range(max(n_seq, n_conc))]
        for b in bodies[:50]:  # warm up connections and caches
            await call(b)
        lat = []
        for b in bodies[:n_seq]:
            t = time.perf_counter()
            await call(b)
            lat.append(time.perf_counter() - t)
        lat.sort()

        async def run_conc(n: int, conc: int, body_of: Callable[[int], bytes]) -> float:
            it = iter(range(n))

            async def worker() -> None:
                for i in it:
                    await call(body_of(i))

            t = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(conc)))
            return time.perf_counter() - t

        conc_s = await run_conc(n_conc, 16, lambda i: bodies[i])
        big_body = packet(0, "{}", [big])
        await call(big_body)
        big_seq_s = await run_conc(n_big, 1, lambda i: big_body)
        big_conc_s = await run_conc(n_big, 4, lambda i: big_body)
    mb = len(big) / 1e6
    return {
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[int(len(lat) * 0.99) - 1] * 1e6,
        "tasks_per_s_c16": n_conc / conc_s,
        "mb_per_s_1mb_c1": n_big * mb / big_seq_s,
        "mb_per_s_1mb_c4": n_big * mb / big_conc_s,
    }


async def run_one(name: str, script: pathlib.Path, quick: bool) -> dict[str, float]:
    d = pathlib.Path(tempfile.mkdtemp(prefix="sdkbench-", dir="/tmp"))
    proc = None
    try:
        proc = await start(script, d / "b.sock")
        return await measure(d / "b.sock", quick)
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        shutil.rmtree(d, ignore_errors=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base_script = pathlib.Path(tmp) / "baseline.py"
        base_script.write_text(BASELINE)
        runs: list[tuple[str, Awaitable[dict[str, float]]]] = [
            ("baseline aiohttp", run_one("baseline", base_script, args.quick)),
            ("sdk echo block", run_one("sdk", ECHO, args.quick)),
        ]
        results: dict[str, dict[str, float]] = {}
        for name, coro in runs:
            results[name] = await coro
    base, sdk = results["baseline aiohttp"], results["sdk echo block"]
    print(f"{'metric':<18}{'baseline':>12}{'sdk':>12}{'sdk/base':>10}")
    for key in base:
        print(f"{key:<18}{base[key]:>12.1f}{sdk[key]:>12.1f}{sdk[key] / base[key]:>10.2f}")
    out: dict[str, Any] = {"bench": "sdk_endpoint", "cpus": os.cpu_count(), "baseline": base, "sdk": sdk}
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
