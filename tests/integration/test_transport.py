"""Two real Transports on 127.0.0.1 over sessions: request/response, one-way, timeouts, back-pressure,
faults, refused handshakes, join over an anonymous session."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from federation.certs import NodeCert, issue_cert
from federation.envelope import Verified, schemas_of
from federation.errors import (
    AuthError,
    AuthReason,
    PeerUnreachable,
    RemoteProtocolError,
    RemoteRejected,
    TokenError,
)
from federation.identity import CaKey, NodeKey
from federation.sessions import ClientHandshake
from federation.tokens import (
    JoinAnswer,
    JoinRequest,
    TokenRecord,
    accept_join_answer,
    admit,
    create_token,
    make_join_request,
    parse_token,
)
from federation.transport import FileRange, Transport, TransportSettings, request_open
from federation.transport_ws import WS_PATH
from tests.waiting import eventually


class _W(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class Echo(_W):
    kind: Literal["test.echo"] = "test.echo"
    v: Literal[1] = 1
    text: str = Field(max_length=10_000)


class EchoReply(_W):
    kind: Literal["test.echo_reply"] = "test.echo_reply"
    v: Literal[1] = 1
    text: str
    sender: str


class Note(_W):
    kind: Literal["test.note"] = "test.note"
    v: Literal[1] = 1
    n: int


class Secret(_W):
    kind: Literal["test.secret"] = "test.secret"
    v: Literal[1] = 1


class BigJoin(_W):  # what a hostile joiner may send on the join route
    kind: Literal["aiosd.join.request"] = "aiosd.join.request"
    v: Literal[1] = 1
    pad: str


SCHEMAS = schemas_of([Echo, EchoReply, Note, Secret, JoinRequest, JoinAnswer])
FAST = TransportSettings(host="127.0.0.1", port=0, request_timeout_s=2.0, shutdown_grace_s=0.2)


def _node(ca: CaKey) -> tuple[NodeKey, NodeCert]:
    key = NodeKey.generate()
    cert = issue_cert(
        ca,
        key.public_bytes,
        network_id=ca.network_id,
        cluster="c",
        roles=["member"],
        ttl_s=3600,
        now=time.time(),
    )
    return key, cert


def _transport(
    ca: CaKey, settings: TransportSettings = FAST, signer: CaKey | None = None, *, ws: bool = True
) -> Transport:
    key, cert = _node(signer or ca)
    return Transport(key, cert, ca.public_bytes, SCHEMAS, settings.model_copy(update={"websocket": ws}))


@pytest.fixture(params=[True], ids=["session"])
def ws(request: pytest.FixtureRequest) -> bool:
    """Every message rides a session now (the `websocket` setting is kept only for compatibility)."""
    return bool(request.param)


async def _echo(v: Verified) -> BaseModel:
    assert isinstance(v.body, Echo)
    return EchoReply(text=v.body.text, sender=v.sender)


@pytest.fixture
async def pair(ws: bool) -> AsyncIterator[tuple[CaKey, Transport, Transport]]:
    ca = CaKey.generate()
    async with _transport(ca, ws=ws) as a, _transport(ca, ws=ws) as b:
        b.route("test.echo", _echo)
        yield ca, a, b


async def test_request_gets_a_verified_typed_answer(pair: tuple[CaKey, Transport, Transport]) -> None:
    _, a, b = pair
    v = await a.request(b.address, "test.echo", Echo(text="hello"), to=b.key.node_id)
    assert v.body == EchoReply(text="hello", sender=a.key.node_id)
    assert v.sender == b.key.node_id and v.to == a.key.node_id
    # the pooled session is reused for the next calls
    for i in range(5):
        assert (await a.request(b.address, "test.echo", Echo(text=str(i)))).body.text == str(i)  # type: ignore[attr-defined]
    assert len(a._sessions) == 1
    assert b.metrics()["envelopes_accepted"] == 6 and a.metrics()["envelopes_accepted"] == 6


async def test_one_way_message_reaches_its_handler(pair: tuple[CaKey, Transport, Transport]) -> None:
    _, a, b = pair
    got: list[int] = []

    async def on_note(v: Verified) -> None:
        assert isinstance(v.body, Note)
        got.append(v.body.n)

    b.route_oneway("test.note", on_note)
    for n in range(3):  # fire-and-forget frames, then acknowledged ones
        await a.send(b.address, "test.note", Note(n=n), ack=False)
    for n in range(3, 5):
        await a.send(b.address, "test.note", Note(n=n), ack=True)
    await eventually(lambda: sorted(got) == [0, 1, 2, 3, 4], timeout_s=5)


async def test_slow_peer_times_out_as_peer_unreachable(pair: tuple[CaKey, Transport, Transport]) -> None:
    _, a, b = pair
    release = asyncio.Event()

    async def stuck(v: Verified) -> BaseModel:
        await release.wait()
        return EchoReply(text="late", sender="x")

    b.route("test.note", stuck)
    try:
        t0 = time.monotonic()
        with pytest.raises(PeerUnreachable, match="timed out"):
            await a.request(b.address, "test.note", Note(n=1), timeout_s=0.3)
        assert time.monotonic() - t0 < 2.0
        assert isinstance(PeerUnreachable("x"), ConnectionError)
    finally:
        release.set()


async def test_closed_port_is_peer_unreachable(ws: bool) -> None:
    ca = CaKey.generate()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with _transport(ca, ws=ws) as a:
        with pytest.raises(PeerUnreachable):
            await a.request(f"127.0.0.1:{port}", "test.echo", Echo(text="x"))


async def test_inbound_back_pressure_answers_503_past_the_cap(ws: bool) -> None:
    ca = CaKey.generate()
    release = asyncio.Event()

    async def held(v: Verified) -> BaseModel:
        await release.wait()
        return EchoReply(text="ok", sender=v.sender)

    async with (
        _transport(ca, ws=ws) as a,
        _transport(ca, FAST.model_copy(update={"max_inflight": 2}), ws=ws) as b,
    ):
        b.route("test.echo", held)
        first = [asyncio.create_task(a.request(b.address, "test.echo", Echo(text="x"))) for _ in range(2)]
        try:
            await eventually(lambda: b._inflight == 2, timeout_s=5)
            for _ in range(3):
                with pytest.raises(RemoteRejected) as e:
                    await a.request(b.address, "test.echo", Echo(text="y"))
                assert e.value.status == 503
            assert b.metrics()["p2p_inbound_busy"] == 3
        finally:
            release.set()
            replies = await asyncio.gather(*first)
        assert [r.body.text for r in replies] == ["ok", "ok"]  # type: ignore[attr-defined]


async def test_one_way_queue_full_drops_with_503_and_counts() -> None:
    ca = CaKey.generate()
    release = asyncio.Event()
    seen: list[int] = []

    async def slow(v: Verified) -> None:
        seen.append(v.body.n)  # type: ignore[attr-defined]
        await release.wait()

    settings = FAST.model_copy(update={"oneway_queue": 1, "oneway_workers": 1})
    async with _transport(ca) as a, _transport(ca, settings) as b:
        b.route_oneway("test.note", slow)
        await a.send(b.address, "test.note", Note(n=0))
        await eventually(lambda: seen == [0], timeout_s=5)  # the worker holds message 0
        await a.send(b.address, "test.note", Note(n=1))  # queued
        with pytest.raises(RemoteRejected) as e:
            await a.send(b.address, "test.note", Note(n=2))
        assert e.value.status == 503 and b.metrics()["p2p_oneway_dropped"] == 1
        release.set()
        await eventually(lambda: seen == [0, 1], timeout_s=5)


async def test_fault_hook_drops_traffic_both_ways_and_heals(pair: tuple[CaKey, Transport, Transport]) -> None:
    _, a, b = pair
    a.faults.block(b.address)
    with pytest.raises(PeerUnreachable, match="dropped"):
        await a.request(b.address, "test.echo", Echo(text="x"))
    a.faults.clear()
    b.faults.block(a.key.node_id)  # inbound: B drops whatever A sends
    with pytest.raises(PeerUnreachable):
        await a.request(b.address, "test.echo", Echo(text="x"))
    assert b.metrics()["p2p_dropped_in"] == 1
    b.faults.unblock(a.key.node_id)
    assert (await a.request(b.address, "test.echo", Echo(text="back"))).body.text == "back"  # type: ignore[attr-defined]


async def test_stranger_from_another_ca_is_refused_and_changes_nothing(
    pair: tuple[CaKey, Transport, Transport],
) -> None:
    ca, a, b = pair
    async with _transport(ca, signer=CaKey.generate(), ws=a.settings.websocket) as stranger:
        with pytest.raises(RemoteRejected) as e:
            await stranger.request(b.address, "test.echo", Echo(text="x"))
    assert e.value.status == 401 and e.value.reason == "unknown_ca"
    m = b.metrics()
    assert m["sessions_handshake_failed_unknown_ca"] == 1 and m["envelopes_accepted"] == 0
    assert m["sessions_handshakes_ok"] == 0


async def test_garbage_oversized_and_unknown_kind_get_clear_statuses(
    pair: tuple[CaKey, Transport, Transport],
) -> None:
    _, a, b = pair
    async with aiohttp.ClientSession() as http:
        for first, code, reason in ((b"\xc1garbage", 4400, "truncated"), (b"XX\x01\x00" + bytes(33), 4400,
                                                                            "bad_version")):
            async with http.ws_connect(f"http://{b.address}{WS_PATH}") as sock:
                await sock.send_bytes(first)
                msg = await sock.receive()
                assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, code, reason)
        async with http.ws_connect(f"http://{b.address}{WS_PATH}") as sock:
            await sock.send_bytes(b"x" * (b.limits.max_frame_bytes + 1))  # over the cap: not buffered
            msg = await sock.receive()
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    with pytest.raises(RemoteRejected) as e:
        await a.request(b.address, "test.nope", Note(n=1))
    assert (e.value.status, e.value.reason) == (404, "unknown_kind")
    with pytest.raises(RemoteRejected) as e:  # known kind, no route
        await a.request(b.address, "test.note", Note(n=1))
    assert e.value.status == 404
    m = b.metrics()
    assert m["sessions_handshake_failed_truncated"] == 1 and m["sessions_handshake_failed_bad_version"] == 1
    assert m["sessions_handshake_failed_too_large"] == 1
    assert m["envelopes_rejected_unknown_kind"] == 1


async def test_forbidden_handler_and_crashing_handler(pair: tuple[CaKey, Transport, Transport]) -> None:
    _, a, b = pair

    async def deny(v: Verified) -> BaseModel:
        raise AuthError(AuthReason.FORBIDDEN, "not an admin")

    async def crash(v: Verified) -> BaseModel:
        raise RuntimeError("bug in a handler")

    b.route("test.secret", deny)
    b.route("test.note", crash)
    with pytest.raises(RemoteRejected) as e:
        await a.request(b.address, "test.secret", Secret())
    assert e.value.status == 403
    with pytest.raises(RemoteRejected) as e:
        await a.request(b.address, "test.note", Note(n=1))
    assert e.value.status == 500 and b.metrics()["p2p_handler_errors"] == 1
    # the server keeps serving after a handler crash
    assert (await a.request(b.address, "test.echo", Echo(text="still here"))).sender == b.key.node_id


async def test_answer_of_an_unknown_kind_is_a_protocol_error(ws: bool) -> None:
    ca = CaKey.generate()
    key, cert = _node(ca)
    async with _transport(ca) as b:
        b.route("test.echo", _echo)
        async with Transport(
            key, cert, ca.public_bytes, schemas_of([Echo]), FAST.model_copy(update={"websocket": ws})
        ) as a:
            with pytest.raises(RemoteProtocolError, match="answer refused"):
                await a.request(b.address, "test.echo", Echo(text="x"))


async def test_a_replayed_handshake_answer_is_refused(ws: bool) -> None:
    """A man in the middle replaying the seed's m2 of an earlier session: the client refuses it."""
    ca = CaKey.generate()
    recorded: list[bytes] = []
    async with (
        _transport(ca) as b,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://{b.address}{WS_PATH}") as sock,
    ):
        await sock.send_bytes(ClientHandshake(lambda n: b"\x07" * n, me=None).m1)
        recorded.append((await sock.receive()).data)

    async def ws_replayer(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for _ in sock:
            await sock.send_bytes(recorded[0])
        return sock

    app = web.Application()
    app.router.add_get(WS_PATH, ws_replayer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with _transport(ca, ws=ws) as a:
            with pytest.raises(RemoteProtocolError, match="session refused: bad_tag"):
                await a.request(f"127.0.0.1:{port}", "test.echo", Echo(text="x"))
            assert a.metrics()["sessions_handshake_failed_bad_tag"] == 1
    finally:
        await runner.cleanup()


async def test_session_pool_is_bounded() -> None:
    ca = CaKey.generate()
    async with (
        _transport(ca, FAST.model_copy(update={"max_peers": 1})) as a,
        _transport(ca) as b,
        _transport(ca) as c,
    ):
        b.route("test.echo", _echo)
        c.route("test.echo", _echo)
        for peer in (b, c, b):
            await a.request(peer.address, "test.echo", Echo(text="x"))
            assert len(a._sessions) == 1


async def test_join_over_the_open_channel_end_to_end() -> None:
    ca = CaKey.generate()
    seed_key, seed_cert = _node(ca)
    s, rec = create_token(ca.network_id, ca.fingerprint, ["127.0.0.1:1"], "c", 60, 1, time.time())
    records: dict[str, TokenRecord] = {rec.token_id: rec}

    async def on_join(req: JoinRequest) -> BaseModel:
        records[req.token_id] = admit(records[req.token_id], req, time.time())
        cert = issue_cert(
            ca,
            req.node_public,
            network_id=ca.network_id,
            cluster="c",
            roles=["member"],
            ttl_s=600,
            now=time.time(),
        )
        return JoinAnswer(ca_public=ca.public_bytes, cert=cert.to_bytes())

    async with Transport(seed_key, seed_cert, ca.public_bytes, SCHEMAS, FAST) as seed:
        seed.route_open(JoinRequest, on_join)
        token = parse_token(s)
        joiner = NodeKey.generate()
        # the joiner has no cert: it uses the module-level request_open (one-off connection)
        answer = await request_open(
            seed.address, make_join_request(token, joiner.public_bytes, time.time()), JoinAnswer
        )
        cert = accept_join_answer(token, answer, joiner.public_bytes, time.time())
        assert cert.node_id == joiner.node_id and records[rec.token_id].uses_left == 0
        with pytest.raises(RemoteRejected, match="no uses left") as e:
            await request_open(
                seed.address, make_join_request(token, joiner.public_bytes, time.time()), JoinAnswer
            )
        assert e.value.status == 403
        with pytest.raises(RemoteRejected) as e:  # over the 16 KiB pre-trust cap
            await request_open(seed.address, BigJoin(pad="x" * 20_000), JoinAnswer)
        assert (e.value.status, e.value.reason) == (413, "too_large")
        with pytest.raises(RemoteRejected) as e:
            await request_open(seed.address, BigJoin(pad="x"), JoinAnswer)
        assert e.value.status == 422 and e.value.reason == "bad_body: token_id: Field required"
        with pytest.raises(RemoteProtocolError, match="ca_mismatch"):  # a seed of another network
            await request_open(seed.address, BigJoin(pad="x"), JoinAnswer, pin=CaKey.generate().fingerprint)
        with pytest.raises(RemoteProtocolError, match="ca_mismatch"):  # the request's network is pinned
            other = make_join_request(parse_token(create_token(
                CaKey.generate().network_id, ca.fingerprint, [], "c", 60, 1, time.time())[0]),
                joiner.public_bytes, time.time())
            await request_open(seed.address, other, JoinAnswer)
        with pytest.raises(RemoteRejected) as e:  # garbage body on the open channel
            await request_open(seed.address, Echo(text="x"), JoinAnswer)
        assert e.value.status == 404
        # a member's pooled Transport can call open routes too
        async with _transport(ca) as client:
            s2, rec2 = create_token(ca.network_id, ca.fingerprint, [], "c", 60, 1, time.time())
            records[rec2.token_id] = rec2
            answer = await client.request_open(
                seed.address, make_join_request(parse_token(s2), joiner.public_bytes, time.time()), JoinAnswer
            )
            assert accept_join_answer(parse_token(s2), answer, joiner.public_bytes, time.time()).node_id
        with pytest.raises(TokenError):
            accept_join_answer(
                token, answer.model_copy(update={"ca_public": CaKey.generate().public_bytes}), b"", 0
            )


async def test_client_reconnects_after_the_peer_restarts(ws: bool) -> None:
    ca = CaKey.generate()
    async with _transport(ca, ws=ws) as a:
        b = _transport(ca, ws=ws)
        async with b:
            b.route("test.echo", _echo)
            await a.request(b.address, "test.echo", Echo(text="1"))
            port = b.port
        with pytest.raises(PeerUnreachable):
            await a.request(f"127.0.0.1:{port}", "test.echo", Echo(text="2"))
        async with _transport(ca, FAST.model_copy(update={"port": port}), ws=ws) as b2:
            b2.route("test.echo", _echo)
            v = await a.request(b2.address, "test.echo", Echo(text="3"))
            assert v.sender == b2.key.node_id


async def test_renewed_cert_is_used_for_later_messages(pair: tuple[CaKey, Transport, Transport]) -> None:
    ca, a, b = pair
    renewed = issue_cert(
        ca,
        a.key.public_bytes,
        network_id=ca.network_id,
        cluster="c",
        roles=["member"],
        ttl_s=7200,
        now=time.time(),
    )
    a.set_cert(renewed)
    seen: list[NodeCert] = []

    async def who(v: Verified) -> BaseModel:
        seen.append(v.cert)
        return EchoReply(text="", sender=v.sender)

    b.route("test.secret", who)
    await a.request(b.address, "test.secret", Secret())
    assert seen == [renewed]
    with pytest.raises(ValueError, match="cert"):
        a.set_cert(b.cert)


async def test_raw_answers_travel_in_sealed_pieces_bytes_or_file(
    pair: tuple[CaKey, Transport, Transport], tmp_path: Path,
) -> None:
    _, a, b = pair
    blob = tmp_path / "blob"
    data = os.urandom(3 * b.settings.data_piece_bytes + 12345)
    blob.write_bytes(data)

    async def raw(v: Verified) -> bytes | FileRange:
        assert isinstance(v.body, Note)
        if v.body.n == 0:
            return data[:1000]
        if v.body.n == 404:
            raise LookupError("no such blob")
        return FileRange(blob.open("rb"), 7, v.body.n)  # the transport closes it

    b.route_raw("test.note", raw)
    assert await a.request_raw(b.address, "test.note", Note(n=0), max_bytes=1000) == data[:1000]
    n = len(data) - 7
    got = await a.request_raw(b.address, "test.note", Note(n=n), max_bytes=n)
    assert got == data[7:] and a.metrics()["p2p_raw_bytes_in"] == 1000 + n
    with pytest.raises(RemoteProtocolError, match="larger than"):
        await a.request_raw(b.address, "test.note", Note(n=n), max_bytes=n - 1)
    with pytest.raises(RemoteRejected) as e:
        await a.request_raw(b.address, "test.note", Note(n=404), max_bytes=10)
    assert e.value.status == 404
    # the link survived all of it, and no frame was dropped on either side
    assert (await a.request_raw(b.address, "test.note", Note(n=5), max_bytes=5)) == data[7:12]
    assert not a.stats.frames_dropped and not b.stats.frames_dropped
