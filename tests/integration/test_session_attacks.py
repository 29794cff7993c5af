"""Handshake and session attacks against real Transports on 127.0.0.1: a peer that stalls halfway
(bounded, times out), revocation and expiry ending live sessions, and a flood of 1,000 handshake
attempts per second from one source (another process) while members keep being served."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
import pytest
from pydantic import BaseModel, ConfigDict

from federation.certs import NodeCert, Revocation, RevocationSet, issue_cert
from federation.envelope import Verified, schemas_of
from federation.errors import PeerUnreachable, RemoteRejected
from federation.identity import CaKey, NodeKey
from federation.sessions import ClientHandshake
from federation.transport import Transport, TransportSettings
from federation.transport_ws import WS_PATH
from tests.waiting import eventually


class Echo(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    kind: Literal["test.echo"] = "test.echo"
    v: Literal[1] = 1
    text: str


SCHEMAS = schemas_of([Echo])
FAST = TransportSettings(host="127.0.0.1", port=0, request_timeout_s=2.0, shutdown_grace_s=0.2,
                         handshake_timeout_s=0.5)


def _node(ca: CaKey, ttl_s: int = 3600) -> tuple[NodeKey, NodeCert]:
    key = NodeKey.generate()
    return key, issue_cert(ca, key.public_bytes, network_id=ca.network_id, cluster="c", roles=["member"],
                           ttl_s=ttl_s, now=time.time())


async def _echo(v: Verified) -> BaseModel:
    assert isinstance(v.body, Echo)
    return v.body


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CaKey, RevocationSet, Transport, Transport]]:
    ca = CaKey.generate()
    revoked = RevocationSet()
    async with (
        Transport(*_node(ca), ca.public_bytes, SCHEMAS, FAST) as a,
        Transport(*_node(ca), ca.public_bytes, SCHEMAS, FAST, revoked=revoked) as b,
    ):
        b.route("test.echo", _echo)
        yield ca, revoked, a, b


async def test_a_peer_that_stops_halfway_is_timed_out_and_counted(
    pair: tuple[CaKey, RevocationSet, Transport, Transport],
) -> None:
    _, _, a, b = pair
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic()
        async with http.ws_connect(f"http://{b.address}{WS_PATH}") as silent:  # sends nothing at all
            msg = await silent.receive(timeout=5)
        assert (msg.data, msg.extra) == (4408, "timeout")
        async with http.ws_connect(f"http://{b.address}{WS_PATH}") as half:  # m1, reads m2, then stops
            await half.send_bytes(ClientHandshake(lambda n: b"\x05" * n, me=None).m1)
            assert (await half.receive(timeout=5)).type is aiohttp.WSMsgType.BINARY
            msg = await half.receive(timeout=5)
        assert (msg.data, msg.extra) == (4408, "timeout")
        assert time.monotonic() - t0 < 4.0  # 2 x 0.5 s deadline, with a margin for a loaded machine
    assert b.stats.handshake_failures["timeout"] == 2 and b.gate.pending == 0
    assert (await a.request(b.address, "test.echo", Echo(text="fine"))).body == Echo(text="fine")


async def test_revocation_ends_a_live_session_and_refuses_the_next(
    pair: tuple[CaKey, RevocationSet, Transport, Transport],
) -> None:
    _, revoked, a, b = pair
    await a.request(b.address, "test.echo", Echo(text="1"))
    assert len(b._server_links) == 1
    revoked.add(Revocation(subject=a.key.node_id, subject_kind="node", revoked_at=int(time.time()), by="admin"))
    await eventually(lambda: not b._server_links, timeout_s=5)  # the sweep closed it (<= 1 s)
    assert b.stats.frames_dropped["peer_cert"] == 1
    # a notices the close (on a loaded box a little later): the next request is a new handshake.
    await eventually(lambda: all(link.closed for link in a._links.values()), timeout_s=5)
    with pytest.raises(RemoteRejected) as e:
        await a.request(b.address, "test.echo", Echo(text="2"))
    assert (e.value.status, e.value.reason) == (401, "revoked")
    assert b.stats.handshake_failures["revoked"] == 1


async def test_an_expired_certificate_ends_the_session_at_its_next_frame() -> None:
    ca = CaKey.generate()
    skew = [0.0]
    async with (
        Transport(*_node(ca, ttl_s=600), ca.public_bytes, SCHEMAS, FAST) as a,
        Transport(*_node(ca), ca.public_bytes, SCHEMAS, FAST, clock=lambda: time.time() + skew[0]) as b,
    ):
        b.route("test.echo", _echo)
        await a.request(b.address, "test.echo", Echo(text="1"))
        skew[0] = 3600.0  # b's clock passes a's cert expiry
        with pytest.raises((PeerUnreachable, RemoteRejected)):
            await a.request(b.address, "test.echo", Echo(text="2"))
        assert b.stats.frames_dropped["peer_cert"] + b.stats.handshake_failures["expired_cert"] >= 1
        with pytest.raises(RemoteRejected) as e:
            await a.request(b.address, "test.echo", Echo(text="3"))
        assert e.value.reason == "expired_cert"


_FLOOD = textwrap.dedent("""
    import asyncio, sys, time
    host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    REQ = (f"GET {sys.argv[5]} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nUpgrade: websocket\\r\\n"
           "Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
           "Sec-WebSocket-Version: 13\\r\\n\\r\\n").encode()
    M1 = b"AS\\x01\\x00\\x00" + b"\\x09" * 32
    sent = 0
    async def one():
        global sent
        try:
            r, w = await asyncio.open_connection(host, port)
            w.write(REQ); await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\\r\\n\\r\\n"), 2)
            if head.startswith(b"HTTP/1.1 101"):
                w.write(b"\\x82\\xa4" + b"\\x00" * 4 + M1); await w.drain()  # masked binary frame, zero mask
                await asyncio.wait_for(r.read(200), 2)
            w.close()
        except Exception:
            pass
    async def main():
        global sent
        tasks = set(); t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            while sent < (now - t0) * rate and len(tasks) < 200:
                t = asyncio.ensure_future(one()); tasks.add(t); t.add_done_callback(tasks.discard); sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        print(sent)
    asyncio.run(main())
""")


async def test_a_handshake_flood_from_one_source_does_bounded_crypto_and_members_are_served(
    pair: tuple[CaKey, RevocationSet, Transport, Transport],
) -> None:
    _, _, a, b = pair
    await a.request(b.address, "test.echo", Echo(text="warm"))  # a member with an established session
    seconds = 3.0
    flood = subprocess.Popen([sys.executable, "-c", _FLOOD, "127.0.0.1", str(b.port), "1000", str(seconds),  # noqa: ASYNC220
                              WS_PATH], stdout=subprocess.PIPE, text=True)
    cpu0, t0 = time.process_time(), time.monotonic()
    lat: list[float] = []
    try:
        while time.monotonic() - t0 < seconds:
            s = time.perf_counter()
            await a.request(b.address, "test.echo", Echo(text="member"), timeout_s=2.0)
            lat.append(time.perf_counter() - s)
            await asyncio.sleep(0.01)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
    finally:
        out, _ = await asyncio.to_thread(flood.communicate, timeout=30)
    attempts = int(out.strip() or 0)
    fails = b.stats.handshake_failures
    started = b.stats.handshakes_ok + sum(v for k, v in fails.items() if k not in ("rate_limited", "busy"))
    # The flooder aims at 1,000/s; on a loaded 2-core machine it reaches 300-750/s (it is Python too).
    assert attempts >= 500, attempts
    assert fails["rate_limited"] >= attempts // 2, dict(fails)
    # crypto work is bounded by the bucket: burst + rate x duration (+ the member's own handshake)
    limit = FAST.handshake_burst + FAST.handshake_rate_s * (seconds + 2) + 2
    assert started <= limit, (started, dict(fails))
    assert len(lat) >= 10 and statistics.median(lat) < 0.05 and max(lat) < 2.0, (len(lat), lat)
    # The process's CPU share is not asserted: parsing ~700 HTTP upgrades/s costs most of a core on a
    # slow 2-core machine whatever the limiter does. What the limiter bounds is the crypto (above)
    # and what it protects is the member's latency (above); the share is printed for the log.
    print(f"flood: {attempts} attempts, {started} handshakes started, cpu {cpu:.2f} of a core")
