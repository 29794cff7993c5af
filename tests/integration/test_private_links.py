"""Private links with real daemons: every p2p byte of a 3-node network passes through recording
relays (one per node, on loopback) during join, gossip, Raft, a forwarded inference and an asset
transfer, and the capture holds none of the test's marker strings nor the join token's secret.

Each daemon listens on 127.0.0.(i+1):P and advertises 127.0.0.(i+1):R, where a relay in this
process forwards to P and keeps a copy of both directions; peers only ever dial advertised
addresses, so the capture is all of their traffic (the join included: the token's seed is n1's
advertised address).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosd.client import Client
from federation.tokens import parse_token
from tests.daemons import Daemon, cli
from tests.instances import echo_block_docs
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(420)  # ~190 s on the shared 2-core machine
MARK = "zq7markerXV"  # in the cluster name, the block id, the asset uri and bytes, the inference input
CLUSTER = f"{MARK.lower()}-lab"
ENV = {"AIOSD_REPLICATION_PROFILE": "test", "AIOSD_MEMBERSHIP_PROFILE": "test", "AIOSD_RUNTIME_DRIVER": "process"}
CAP_BYTES = 512 << 20


class Relay:
    """TCP relays on loopback that copy every byte they forward (threads with their own loop)."""

    def __init__(self) -> None:
        self.captured = bytearray()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.AbstractServer] = []

    def add(self, host: str, port: int, target_port: int) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._listen(host, port, target_port), self._loop)
        self._servers.append(fut.result(timeout=5))

    async def _listen(self, host: str, port: int, target_port: int) -> asyncio.AbstractServer:
        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(1 << 16):
                    if len(self.captured) < CAP_BYTES:
                        self.captured += data
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                ur, uw = await asyncio.open_connection(host, target_port)
            except OSError:
                w.close()
                return
            await asyncio.gather(pipe(r, uw), pipe(ur, w))

        return await asyncio.start_server(on_conn, host, port)

    def close(self) -> None:
        for s in self._servers:
            self._loop.call_soon_threadsafe(s.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _api(d: Daemon, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Any:
    async def go() -> Any:
        async with Client(d.socket, timeout_s=timeout_s) as c:
            return await c.request(method, path, body)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Daemon], Relay, str]]:
    root = tmp_path_factory.mktemp("links")
    relay = Relay()
    nodes: list[Daemon] = []

    def start(i: int) -> Daemon:
        host = f"127.0.0.{i + 1}"
        listen, adv = _free_port(host), _free_port(host)
        relay.add(host, adv, listen)
        d = Daemon(root, f"n{i}", p2p_host=host, extra=["--p2p-port", str(listen)],
                   env={**ENV, "AIOSD_P2P_ADVERTISE": f"{host}:{adv}"})
        return d.start()

    try:
        cli("init", "--data-dir", str(root / "n1"), "--cluster", CLUSTER, check=True)
        nodes.append(start(1))
        r = nodes[0].cli("token", "create", "--json", "--uses", "2", "--ttl", "10m")
        assert r.returncode == 0, r.stderr
        token = json.loads(r.stdout)["token"]
        for i in (2, 3):
            j = cli("join", token, "--data-dir", str(root / f"n{i}"), "--json")
            assert j.returncode == 0, j.stderr
            nodes.append(start(i))
        ids = {d.json("status")["node_id"] for d in nodes}

        def ready(d: Daemon) -> bool:
            alive = {x["node_id"] for x in d.json("nodes")["nodes"] if x["state"] == "alive"}
            c = _api(d, "GET", "/v1/controller", timeout_s=2.0)
            return alive == ids and set(c["voters"]) == ids and bool(c["leader"])

        for d in nodes:
            wait_sync(functools.partial(ready, d), timeout_s=40, interval_s=0.2)
        yield nodes, relay, token
    finally:
        for d in nodes:
            d.stop()
        relay.close()


def test_a_capture_of_join_gossip_raft_inference_and_assets_holds_no_marker(
    relayed: tuple[list[Daemon], Relay, str], tmp_path: Path,
) -> None:
    nodes, relay, token = relayed
    n1, n2, n3 = nodes
    # Raft + gossip: a cluster block applied on a follower is forwarded to the leader and placed.
    block = f"{MARK.lower()}-echo"
    spec = tmp_path / "echo.json"
    spec.write_text(echo_block_docs(block, 1, {"uri": "policy.resourceAllocator.cpu:v1",
                                               "parameters": {"cpus": 0.1}}))
    r = n2.cli("apply", "-f", str(spec), "--cluster", "--json")
    assert r.returncode == 0, r.stderr

    def placed_on() -> str | None:
        blocks = _api(n1, "GET", "/v1/controller/placements")["blocks"]
        inst = blocks.get(block, {}).get("instances", [])
        return str(inst[0]["node_id"]) if inst else None

    host_id = wait_sync(placed_on, timeout_s=20, interval_s=0.2)
    by_id = {d.json("status")["node_id"]: d for d in nodes}
    host = by_id[host_id]

    def healthy() -> bool:
        rows = _api(host, "GET", "/v1/ps", timeout_s=3.0)["instances"]
        return any(x["block_id"] == block and x["state"] == "healthy" for x in rows)

    wait_sync(healthy, timeout_s=60, interval_s=0.25)
    # A forwarded inference: asked on a node that runs no instance.
    bare = next(d for d in nodes if d is not host)
    words = f"{MARK} the secret inference input"
    out = _api(bare, "POST", f"/v1/infer/block/{block}", {"data": {"message": words}})
    assert words in json.dumps(out["outputs"])
    # An asset transfer: pushed on n1 (registry record by gossip), fetched by n3 in sealed pieces.
    src = tmp_path / "asset.bin"
    src.write_bytes((MARK.encode() + os.urandom(40)) * 40_000)
    uri = f"{MARK.lower()}/asset:1"
    r = n1.cli("asset", "push", str(src), "--uri", uri, "--chunk-bytes", str(256 * 1024), "--json")
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: any(i["uri"] == uri for i in n3.json("asset", "list")), timeout_s=20, interval_s=0.2)
    got = tmp_path / "asset.out"
    r = n3.cli("asset", "get", uri, "-o", str(got), "--json", timeout_s=60)
    assert r.returncode == 0, r.stderr
    assert got.read_bytes() == src.read_bytes()

    cap = bytes(relay.captured)
    assert relay.connections >= 3 and len(cap) > len(src.read_bytes())  # the transfer went through
    secret = parse_token(token).secret
    for needle in (MARK.encode(), MARK.lower().encode(), words.encode(), secret, token.encode(),
                   CLUSTER.encode(), block.encode()):
        assert needle not in cap, needle
    # and the capture is not plaintext of any other kind either: no msgpack map keys of our wire
    for key in (b"swim.ping", b"raft.append", b"repl.push", b"blk.task", b"asset.chunk.get", b"node_id"):
        assert key not in cap, key
    # sessions were established and no frame was dropped on the way
    for d in nodes:
        env = d.json("doctor").get("envelopes", {})
        assert env.get("sessions_handshakes_ok", 0) >= 1, env
        assert not any(k.startswith("sessions_frames_dropped_") for k in env), env
