"""`POST /v1/infer/block` through the daemon vs the instance's own endpoint, same run; apply → first answer.

1. Starts a real `aiosd run` (process driver by default) in a temp dir and applies examples/echo;
   records apply → first answer (CLI-free: API apply with ?wait, then one infer; target <= 3 s).
2. Latency, 1 KB msgpack tasks, sequential, interleaved blocks of 100: direct POST /v1/task on the
   instance's unix socket vs POST /v1/infer/block/echo-1 on the daemon socket (msgpack in and out).
   Reports p50/p99 and the added p50 (target <= 200 us). Floor, same run: a minimal aiohttp proxy
   (bench/support/min_proxy.py: forward the bytes, nothing else) in front of the same instance;
   what it adds is the cost of any aiohttp hop in the path on this machine.

Usage: .venv/bin/python bench/infer_api.py [--driver process|podman] [--samples 2000]
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
import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "examples" / "echo"


def task_body(i: int) -> bytes:
    out: bytes = msgpack.packb({"session_id": "", "seq_no": i, "data": json.dumps({"message": "x" * 1000}),
                                "files": [], "frame_ptr": "", "output_ptr": "", "ts": 0.0}, use_bin_type=True)
    return out


async def timed(s: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with s.post(url, data=body, headers=headers) as r:
        await r.read()
        if r.status != 200:
            raise SystemExit(f"{url}: HTTP {r.status}")
    return time.perf_counter() - t0


async def bench(sock: Path, samples: int) -> dict[str, float]:
    text = (ECHO / "component.json").read_text() + "\n" + (ECHO / "block.json").read_text()
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as api:
        t0 = time.perf_counter()
        async with api.post("http://aiosd/v1/apply?wait=60", data=text) as r:
            doc = await r.json()
            assert doc["task"]["state"] == "succeeded", doc
        async with api.post("http://aiosd/v1/infer/block/echo-1", json={"data": {"message": "first"}}) as r:
            assert r.status == 200, await r.text()
        first_answer_s = time.perf_counter() - t0
        async with api.get("http://aiosd/v1/ps") as r:
            ep = (await r.json())["instances"][0]["endpoint"]
        inst_sock = ep.removeprefix("unix:")
        hdr = {"Content-Type": "application/msgpack"}
        api_hdr = {**hdr, "Accept": "application/msgpack"}
        proxy_sock = sock.parent / "proxy.sock"
        proxy = subprocess.Popen([sys.executable, str(ROOT / "bench" / "support" / "min_proxy.py"), str(proxy_sock),  # noqa: ASYNC220
                                  inst_sock], cwd=ROOT)
        try:
            while not proxy_sock.exists():
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=inst_sock)) as direct, \
                    aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(proxy_sock))) as floor:
                for i in range(200):  # warm every path
                    await timed(direct, "http://localhost/v1/task", task_body(i), hdr)
                    await timed(floor, "http://localhost/v1/task", task_body(i), hdr)
                    await timed(api, "http://aiosd/v1/infer/block/echo-1", task_body(i), api_hdr)
                d_lat: list[float] = []
                p_lat: list[float] = []
                a_lat: list[float] = []
                for _block in range(samples // 100):
                    for i in range(100):
                        d_lat.append(await timed(direct, "http://localhost/v1/task", task_body(i), hdr))
                    for i in range(100):
                        p_lat.append(await timed(floor, "http://localhost/v1/task", task_body(i), hdr))
                    for i in range(100):
                        a_lat.append(await timed(api, "http://aiosd/v1/infer/block/echo-1", task_body(i), api_hdr))
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)
    q = statistics.quantiles
    d50, a50, p50 = statistics.median(d_lat), statistics.median(a_lat), statistics.median(p_lat)
    return {"apply_to_first_answer_s": round(first_answer_s, 3),
            "direct_p50_us": round(d50 * 1e6, 1), "direct_p99_us": round(q(d_lat, n=100)[98] * 1e6, 1),
            "api_p50_us": round(a50 * 1e6, 1), "api_p99_us": round(q(a_lat, n=100)[98] * 1e6, 1),
            "added_p50_us": round((a50 - d50) * 1e6, 1),
            "floor_proxy_p50_us": round(p50 * 1e6, 1), "floor_added_p50_us": round((p50 - d50) * 1e6, 1),
            "daemon_work_over_floor_p50_us": round((a50 - p50) * 1e6, 1), "samples": len(d_lat)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", default="process", choices=["process", "podman"])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--profile", metavar="PATH", help="run the daemon under cProfile, stats written to PATH")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aiosd-bi"))
    sock = tmp / "a.sock"
    env = {**os.environ}
    env.pop("NOTIFY_SOCKET", None)
    prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    proc = subprocess.Popen([sys.executable, *prof, "-m", "aiosd.cli", "run", "--data-dir", str(tmp / "d"), "--socket",
                             str(sock), "--p2p-host", "127.0.0.1", "--p2p-port", "0", "--driver", args.driver,
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "log", "wb"), start_new_session=True)  # noqa: SIM115
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("daemon did not start:\n" + (tmp / "log").read_text())
            time.sleep(0.05)
        out = asyncio.run(bench(sock, args.samples))
        out["driver"] = args.driver
        print(json.dumps(out, indent=2))
        subprocess.run([sys.executable, "-m", "aiosd.cli", "delete", "block", "echo-1", "--socket", str(sock),
                        "--data-dir", str(tmp / "d")], cwd=ROOT, capture_output=True, timeout=60, check=False)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
