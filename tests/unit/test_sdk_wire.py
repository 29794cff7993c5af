"""sdk.wire: packets to msgpack and back; every malformed field named; replies decode."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk import AIOSFile, AIOSPacket, PacketError, wire


def test_packet_round_trips_with_raw_file_bytes() -> None:
    p = AIOSPacket(session_id="s", seq_no=7, data='{"a": 1}', files=[AIOSFile("{}", b"\x00\xff" * 10)],
                   frame_ptr="f", output_ptr="o", ts=1.5)
    body = wire.encode_packet(p)
    assert b"\x00\xff" * 10 in body  # bin, not base64
    assert wire.decode_packet(body) == p


def test_missing_keys_default_and_unknown_keys_are_ignored() -> None:
    p = wire.decode_packet(msgpack.packb({"data": "1", "route": [1, 2]}))
    assert p == AIOSPacket(data="1")
    assert wire.decode_packet(msgpack.packb({"session_id": None, "files": None, "ts": 3})) == AIOSPacket(ts=3.0)


@pytest.mark.parametrize(("obj", "field"), [
    ([1], "packet"),
    ({"session_id": 1}, "packet.session_id"),
    ({"seq_no": "1"}, "packet.seq_no"),
    ({"seq_no": True}, "packet.seq_no"),
    ({"seq_no": 1.5}, "packet.seq_no"),
    ({"data": b"x"}, "packet.data"),
    ({"ts": "now"}, "packet.ts"),
    ({"ts": float("nan")}, "packet.ts"),
    ({"files": {}}, "packet.files"),
    ({"files": [{}, 3]}, "packet.files[1]"),
    ({"files": [{"metadata": 1}]}, "packet.files[0].metadata"),
    ({"files": [{"file_data": "text"}]}, "packet.files[0].file_data"),
    ({"frame_ptr": []}, "packet.frame_ptr"),
    ({"output_ptr": {}}, "packet.output_ptr"),
])
def test_each_bad_field_is_named(obj: object, field: str) -> None:
    with pytest.raises(PacketError) as e:
        wire.decode_packet(msgpack.packb(obj))
    assert e.value.field == field
    assert str(e.value).startswith(field + ": ")


@pytest.mark.parametrize("body", [b"", b"\xc1", b"\x92\x01", msgpack.packb({"a": 1}) + b"\x00", b"\xa2\xff\xfe"])
def test_undecodable_bodies_raise_packet_error(body: bytes) -> None:
    with pytest.raises(PacketError):
        wire.decode_packet(body)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_packet_error(body: bytes) -> None:
    try:
        wire.decode_packet(body)
    except PacketError:
        pass


def test_reply_round_trip_and_error_reply() -> None:
    out = [AIOSPacket(session_id="s", seq_no=1, data="{}"), AIOSPacket(seq_no=2)]
    assert wire.decode_reply(wire.encode_reply(out)) == (out, None)
    assert wire.decode_reply(wire.encode_reply([])) == ([], None)
    err = {"type": "Busy", "message": "m", "block_id": "b", "stage": "admit"}
    assert wire.decode_reply(wire.encode_error(err)) == ([], err)
    for bad in (b"\xc1", msgpack.packb({"ok": 1}), msgpack.packb({"ok": True}), msgpack.packb({"ok": False})):
        with pytest.raises(PacketError):
            wire.decode_reply(bad)
    with pytest.raises(PacketError, match=r"reply.packets\[0\].seq_no"):
        wire.decode_reply(msgpack.packb({"ok": True, "packets": [{"seq_no": "x"}]}))


def test_contract_docstring_names_every_route_and_variable() -> None:
    doc = wire.__doc__ or ""
    for word in ("AIOSD_INSTANCE_SOCKET", "AIOSD_INSTANCE_PORT", "AIOSD_INSTANCE_CONTEXT", "AIOSD_INSTANCE_WORKERS",
                 "AIOSD_INSTANCE_QUEUE", "POST /v1/task", "GET  /health", "POST /setParameters", "POST /mgmt",
                 "GET  /metrics", "SIGTERM", "503", "422", "400"):
        assert word in doc, word
