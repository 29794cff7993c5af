"""Envelope cost on the p2p transport, against a same-run baseline.

1. Latency: signed request/response through federation.transport vs a plain aiohttp POST of the
   same 1 KB body, both servers in one separate process, interleaved blocks, sequential calls.
   Reports p50/p99 of each and the added p50 (target <= 120 us).
2. Server throughput: one Transport server process, several client processes each running
   concurrent signed requests; reports verified envelopes per server CPU-second (target >=
   8,000/s per core) and per wall second.
3. Micro: seal / open_envelope alone, in this process.

Usage: .venv/bin/python bench/envelope.py [--samples 3000] [--seconds 5] [--clients 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from federation.certs import NodeCert, issue_cert
from federation.envelope import open_envelope, schemas_of, seal
from federation.identity import CaKey, NodeKey, verify_signature
from federation.replay import ReplayCache
from federation.transport import Transport, TransportSettings


class Blob(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    kind: Literal["bench.blob"] = "bench.blob"
    v: Literal[1] = 1
    data: bytes


class Note(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    kind: Literal["bench.note"] = "bench.note"
    v: Literal[1] = 1
    data: bytes


class BlobReply(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    kind: Literal["bench.reply"] = "bench.reply"
    v: Literal[1] = 1
    n: int


SCHEMAS = schemas_of([Blob, BlobReply, Note])
BODY = Blob(data=os.urandom(1024))
# --http (env AIOSD_BENCH_HTTP=1, inherited by the spawned processes): one POST per request.
SETTINGS = TransportSettings(
    host="127.0.0.1",
    port=0,
    max_inflight=4096,
    max_skew_s=60,
    websocket=os.environ.get("AIOSD_BENCH_HTTP") != "1",
)


def _identity(ca_seed: bytes, node_seed: bytes) -> tuple[CaKey, NodeKey, NodeCert]:
    ca, key = CaKey.from_seed(ca_seed), NodeKey.from_seed(node_seed)
    cert = issue_cert(
        ca,
        key.public_bytes,
        network_id=ca.network_id,
        cluster="bench",
        roles=["member"],
        ttl_s=3600,
        now=time.time(),
    )
    return ca, key, cert


# -- server process --------------------------------------------------------------------------


def _serve(ca_seed: bytes, node_seed: bytes, ports: Any, uvloop: bool) -> None:
    if uvloop:
        import uvloop as uv  # type: ignore[import-not-found,unused-ignore]  # optional

        uv.install()
    asyncio.run(_serve_main(ca_seed, node_seed, ports))


async def _serve_main(ca_seed: bytes, node_seed: bytes, ports: Any) -> None:
    ca, key, cert = _identity(ca_seed, node_seed)

    async def answer(v: Any) -> BaseModel:
        return BlobReply(n=len(v.body.data))

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async with Transport(key, cert, ca.public_bytes, SCHEMAS, SETTINGS) as t:
        t.route("bench.blob", answer)

        async def sink(v: Any) -> None:
            return None

        t.route_oneway("bench.note", sink)

        async def stats(request: web.Request) -> web.Response:
            cpu = os.times()
            return web.json_response(
                {
                    "accepted": t.verifier.accepted,
                    "cpu_s": cpu.user + cpu.system,
                    "rejected": sum(t.verifier.rejected.values()),
                }
            )

        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/plain", plain)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put((t.port, runner.addresses[0][1]))
        await asyncio.Event().wait()  # until terminated


# -- latency -----------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _latency(p2p_port: int, plain_port: int, ca_seed: bytes, samples: int) -> dict[str, float]:
    ca, key, cert = _identity(ca_seed, os.urandom(32))
    signed_t: list[float] = []
    plain_t: list[float] = []
    raw_body = BODY.data
    async with (
        Transport(key, cert, ca.public_bytes, SCHEMAS, SETTINGS) as t,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as http,
    ):
        addr = f"127.0.0.1:{p2p_port}"
        url = f"http://127.0.0.1:{plain_port}/plain"
        for _ in range(200):  # warm up both paths and the connection pools
            await t.request(addr, "bench.blob", BODY)
            async with http.post(url, data=raw_body) as r:
                await r.read()
        block = 100
        for _ in range(max(1, samples // block)):
            for _ in range(block):
                t0 = time.perf_counter()
                await t.request(addr, "bench.blob", BODY)
                signed_t.append(time.perf_counter() - t0)
            for _ in range(block):
                t0 = time.perf_counter()
                async with http.post(url, data=raw_body) as r:
                    await r.read()
                plain_t.append(time.perf_counter() - t0)
    us = 1e6
    return {
        "signed_p50_us": statistics.median(signed_t) * us,
        "signed_p99_us": _pct(signed_t, 0.99) * us,
        "plain_p50_us": statistics.median(plain_t) * us,
        "plain_p99_us": _pct(plain_t, 0.99) * us,
        "added_p50_us": (statistics.median(signed_t) - statistics.median(plain_t)) * us,
        "samples": len(signed_t),
    }


# -- throughput ----------------------------------------------------------------------------------


def _client(
    p2p_port: int, ca_seed: bytes, concurrency: int, until: float, out: Any, uvloop: bool, oneway: bool
) -> None:
    if uvloop:
        import uvloop as uv  # type: ignore[import-not-found,unused-ignore]  # optional

        uv.install()
    out.put(asyncio.run(_client_main(p2p_port, ca_seed, concurrency, until, oneway)))


async def _client_main(p2p_port: int, ca_seed: bytes, concurrency: int, until: float, oneway: bool) -> int:
    ca, key, cert = _identity(ca_seed, os.urandom(32))
    done = 0
    settings = SETTINGS.model_copy(update={"per_peer_connections": concurrency})
    async with Transport(key, cert, ca.public_bytes, SCHEMAS, settings) as t:
        addr = f"127.0.0.1:{p2p_port}"

        note = Note(data=BODY.data)

        async def worker() -> None:
            nonlocal done
            while time.time() < until:
                if oneway:
                    await t.send(addr, "bench.note", note, ack=False)
                else:
                    await t.request(addr, "bench.blob", BODY)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def _stats(plain_port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{plain_port}/stats") as r:
        out: dict[str, float] = await r.json()
        return out


def _throughput(
    p2p_port: int,
    plain_port: int,
    ca_seed: bytes,
    clients: int,
    conc: int,
    seconds: float,
    uvloop: bool,
    oneway: bool = False,
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    warm = 2.0
    until = time.time() + warm + seconds + 1.0
    procs = [
        ctx.Process(target=_client, args=(p2p_port, ca_seed, conc, until, out, uvloop, oneway))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    time.sleep(warm)  # a benchmark, not a test: let clients start and connect
    s0 = asyncio.run(_stats(plain_port))
    t0 = time.time()
    time.sleep(seconds)
    s1 = asyncio.run(_stats(plain_port))
    t1 = time.time()
    total = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    n = s1["accepted"] - s0["accepted"]
    cpu = s1["cpu_s"] - s0["cpu_s"]
    return {
        "verified_per_server_cpu_s": n / cpu if cpu else 0.0,
        "verified_per_wall_s": n / (t1 - t0),
        "server_cpu_share": cpu / (t1 - t0),
        "client_requests_total": float(total),
        "rejected": s1["rejected"],
        "clients": clients,
        "concurrency_per_client": conc,
    }


# -- micro ---------------------------------------------------------------------------------------


def _micro(n: int = 5000) -> dict[str, float]:
    ca, key, cert = _identity(os.urandom(32), os.urandom(32))
    cb = cert.to_bytes()
    now = time.time()
    t0 = time.perf_counter()
    raws = [seal(key, cert, "bench.blob", BODY, now, cert_bytes=cb) for _ in range(n)]
    t1 = time.perf_counter()
    from federation.certs import CertCache

    cache, replay = CertCache(ca.public_bytes), ReplayCache(max_entries=n + 1)
    for raw in raws:
        open_envelope(
            raw,
            ca_public=ca.public_bytes,
            now=now,
            revoked=(),
            replay_cache=replay,
            schemas=SCHEMAS,
            cert_cache=cache,
        )
    t2 = time.perf_counter()
    msg = raws[0]
    sig = key.sign(msg)
    t3 = time.perf_counter()
    for _ in range(n):
        key.sign(msg)
    t4 = time.perf_counter()
    for _ in range(n):
        verify_signature(key.public_bytes, msg, sig)
    t5 = time.perf_counter()
    sign_us, verify_us = (t4 - t3) / n * 1e6, (t5 - t4) / n * 1e6
    return {
        "seal_us": (t1 - t0) / n * 1e6,
        "open_us": (t2 - t1) / n * 1e6,
        "sign_us": sign_us,
        "verify_us": verify_us,
        # a signed round trip signs twice and verifies twice (request + answer): the crypto floor
        "crypto_floor_us": 2 * (sign_us + verify_us),
        "envelope_bytes": len(raws[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--uvloop", action="store_true", help="run server and clients on uvloop (if installed)")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--http", action="store_true", help="signed requests as one HTTP POST each (no WebSocket)"
    )
    args = ap.parse_args()
    if args.http:
        global SETTINGS
        os.environ["AIOSD_BENCH_HTTP"] = "1"
        SETTINGS = SETTINGS.model_copy(update={"websocket": False})
    ca_seed, node_seed = os.urandom(32), os.urandom(32)
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ca_seed, node_seed, ports, args.uvloop), daemon=True)
    server.start()
    try:
        p2p_port, plain_port = ports.get(timeout=30)
        result: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "uvloop": args.uvloop,
            "websocket": SETTINGS.websocket,
        }
        result["micro"] = _micro()
        result["latency"] = asyncio.run(_latency(p2p_port, plain_port, ca_seed, args.samples))
        result["throughput"] = _throughput(
            p2p_port, plain_port, ca_seed, args.clients, args.concurrency, args.seconds, args.uvloop
        )
        result["throughput_oneway"] = _throughput(
            p2p_port,
            plain_port,
            ca_seed,
            args.clients,
            args.concurrency,
            args.seconds,
            args.uvloop,
            oneway=True,
        )
    finally:
        server.terminate()
        server.join(timeout=10)
    lat, thr, mic = result["latency"], result["throughput"], result["micro"]
    print(
        f"micro: seal {mic['seal_us']:.1f} us, open {mic['open_us']:.1f} us, {mic['envelope_bytes']} B envelope; "
        f"ed25519 sign {mic['sign_us']:.1f} us, verify {mic['verify_us']:.1f} us, "
        f"round-trip crypto floor {mic['crypto_floor_us']:.0f} us"
    )
    print(
        f"latency (1 KB, sequential): signed p50 {lat['signed_p50_us']:.0f} us p99 {lat['signed_p99_us']:.0f} us | "
        f"plain p50 {lat['plain_p50_us']:.0f} us p99 {lat['plain_p99_us']:.0f} us | "
        f"added p50 {lat['added_p50_us']:.0f} us (target <= 120)"
    )
    print(
        f"throughput ({thr['clients']} client procs x {thr['concurrency_per_client']}): "
        f"{thr['verified_per_server_cpu_s']:.0f} verified envelopes per server CPU-second (target >= 8000), "
        f"{thr['verified_per_wall_s']:.0f}/s wall, server CPU share {thr['server_cpu_share']:.2f}"
    )
    ow = result["throughput_oneway"]
    print(
        f"throughput one-way (verify only): {ow['verified_per_server_cpu_s']:.0f} per server CPU-second, "
        f"{ow['verified_per_wall_s']:.0f}/s wall, server CPU share {ow['server_cpu_share']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
