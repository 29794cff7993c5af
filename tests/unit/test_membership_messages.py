"""SWIM wire messages: msgpack round trip, rejections that name the field, and a decode fuzz."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import AuthError, AuthReason
from federation.membership import (
    Ack,
    Alive,
    Dead,
    Gossip,
    MemberRecord,
    Nack,
    Ping,
    PingReq,
    Suspect,
    SwimMsg,
    Sync,
    SyncReply,
    decode,
    encode,
)
from federation.sansio import NodeId

A, B = NodeId("node-a"), NodeId("node-b")
UPDATES = (
    Alive(node=A, inc=3, addr="127.0.0.1:7701", meta={"role": "gpu"}),
    Suspect(node=B, inc=1, src=A),
    Dead(node=B, inc=2, src=B),
)
SAMPLES: list[SwimMsg] = [
    Ping(seq=1, target=B, gossip=UPDATES),
    Ack(seq=2**63 - 1),
    Nack(seq=0),
    PingReq(seq=5, target=B, target_addr="127.0.0.2:7701", gossip=UPDATES[:1]),
    Gossip(updates=UPDATES),
    Sync(join=True, states=(MemberRecord(node=A, addr="x", state="suspect", inc=9, meta={"k": ""}),)),
    SyncReply(states=()),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_round_trip(msg: SwimMsg) -> None:
    assert decode(encode(msg)) == msg


def _raw(msg: SwimMsg) -> dict[str, Any]:
    return msg.model_dump(mode="python")


@pytest.mark.parametrize(
    ("mutate", "reason", "detail"),
    [
        (lambda r: r.update(v=2), AuthReason.UNSUPPORTED_VERSION, "v: '2'"),
        (lambda r: r.update(kind="swim.pong"), AuthReason.UNKNOWN_KIND, "kind: 'swim.pong'"),
        (lambda r: r.pop("kind"), AuthReason.UNKNOWN_KIND, "kind: 'None'"),
        (lambda r: r.update(seq=-1), AuthReason.BAD_BODY, "seq: Input should be greater than or equal to 0"),
        (lambda r: r.update(seq="1"), AuthReason.BAD_BODY, "seq: Input should be a valid integer"),
        (lambda r: r.update(target=""), AuthReason.BAD_BODY, "target: String should have at least 1"),
        (lambda r: r.update(extra=1), AuthReason.BAD_BODY, "extra: Extra inputs are not permitted"),
        (lambda r: r["gossip"][0].update(inc=-5), AuthReason.BAD_BODY, "gossip.0.swim.alive.inc"),
        (lambda r: r["gossip"][1].update(kind="swim.x"), AuthReason.BAD_BODY, "gossip.1"),
        (
            lambda r: r.update(gossip=[dict(r["gossip"][0])] * 65),
            AuthReason.BAD_BODY,
            "gossip: Tuple should have at most 64",
        ),
    ],
)
def test_bad_message_is_rejected_naming_the_field(mutate: Any, reason: AuthReason, detail: str) -> None:
    raw = _raw(SAMPLES[0])
    raw["gossip"] = [dict(u) for u in raw["gossip"]]
    mutate(raw)
    if isinstance(raw.get("gossip"), list):
        raw["gossip"] = tuple(raw["gossip"])
    with pytest.raises(AuthError) as e:
        decode(msgpack.packb(raw, use_bin_type=True))
    assert e.value.reason == reason
    assert detail in e.value.detail


def test_meta_is_bounded() -> None:
    raw = _raw(Gossip(updates=(UPDATES[0],)))
    raw["updates"][0]["meta"] = {f"k{i}": "v" for i in range(33)}
    with pytest.raises(AuthError, match="updates.0.swim.alive.meta"):
        decode(msgpack.packb(raw))


def test_not_msgpack_not_a_map_and_too_large() -> None:
    with pytest.raises(AuthError) as e:
        decode(b"\xc1")
    assert e.value.reason == AuthReason.MALFORMED
    with pytest.raises(AuthError) as e:
        decode(msgpack.packb([1, 2]))
    assert e.value.reason == AuthReason.MALFORMED
    with pytest.raises(AuthError) as e:
        decode(encode(SAMPLES[0]), max_bytes=10)
    assert e.value.reason == AuthReason.TOO_LARGE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_auth_error(data: bytes) -> None:
    try:
        decode(data)
    except AuthError:
        pass


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8), st.binary(max_size=8)
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_valid_messages_decode_or_raise_auth_error(msg: SwimMsg, data: st.DataObject) -> None:
    raw = _raw(msg)
    key = data.draw(st.sampled_from(sorted(raw)))
    raw[key] = data.draw(_scalars)
    try:
        out = decode(msgpack.packb(raw, use_bin_type=True))
    except AuthError:
        return
    assert decode(encode(out)) == out
