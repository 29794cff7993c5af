"""Issue 18 / RFC 6455 §5.1: the p2p port closes a WebSocket whose client sends a frame that is not
masked (aiohttp alone accepts it), answering a 1002 close, and counts it. A raw socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import pytest

from federation.certs import issue_cert
from federation.envelope import schemas_of
from federation.identity import CaKey, NodeKey
from federation.transport import Transport, TransportSettings
from federation.transport_ws import WS_PATH
from federation.ws_mask import CLOSE_1002

pytestmark = pytest.mark.timeout(30)
FAST = TransportSettings(host="127.0.0.1", port=0, request_timeout_s=2.0, shutdown_grace_s=0.2,
                         handshake_timeout_s=3.0)


def _frame(payload: bytes, masked: bool) -> bytes:
    if not masked:
        return bytes([0x82, len(payload)]) + payload
    key = os.urandom(4)
    return bytes([0x82, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _upgrade(port: int, first: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write(f"GET {WS_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode() + first)
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return r, w


async def _rest(r: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return await r.read()  # up to EOF: the server closed


async def test_an_unmasked_client_frame_closes_the_connection_with_1002_and_is_counted() -> None:
    ca = CaKey.generate()
    key = NodeKey.generate()
    cert = issue_cert(ca, key.public_bytes, network_id=ca.network_id, cluster="c", roles=["member"], ttl_s=3600,
                      now=time.time())
    async with Transport(key, cert, ca.public_bytes, schemas_of([]), FAST) as t:
        r, w = await _upgrade(t.port)
        w.write(_frame(b"\x00" * 8, masked=True))  # masked (garbage for the handshake: refused otherwise)
        await w.drain()
        async with asyncio.timeout(5):
            assert (await r.read(2))[:1] == b"\x88"  # the handshake's own close, not ours
        w.close()
        assert t.edge_metrics()["unmasked_frames"] == 0
        r, w = await _upgrade(t.port)
        w.write(_frame(b"hello", masked=False))
        await w.drain()
        assert (await _rest(r)).endswith(CLOSE_1002)
        w.close()
        assert t.edge_metrics()["unmasked_frames"] == 1
        r, w = await _upgrade(t.port, first=_frame(b"hi", masked=False))  # sent with the upgrade request
        assert (await _rest(r)).endswith(CLOSE_1002)
        w.close()
        assert t.edge_metrics()["unmasked_frames"] == 2
