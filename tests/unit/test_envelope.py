"""Envelopes: a sealed message opens; each rejection reason has its own case; counters, quiet logs."""

from __future__ import annotations

import logging
from typing import Literal

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import pytest
from pydantic import BaseModel, ConfigDict, Field

from federation.certs import NodeCert, issue_cert, pack
from federation.envelope import EnvelopeVerifier, QuietLog, Verified, open_envelope, schemas_of, seal
from federation.errors import AuthError, AuthReason
from federation.identity import CaKey, NodeKey
from federation.replay import ReplayCache
from federation.sansio import NodeId

NOW = 1_800_000_000.0


class Ping(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    kind: Literal["test.ping"] = "test.ping"
    v: Literal[1] = 1
    seq: int = Field(ge=0)
    items: tuple[int, ...] = ()
    blob: bytes = b""


SCHEMAS = schemas_of([Ping])


class Node:
    def __init__(self, ca: CaKey, *, ttl_s: int = 3600) -> None:
        self.key = NodeKey.generate()
        self.cert = issue_cert(
            ca,
            self.key.public_bytes,
            network_id=ca.network_id,
            cluster="c",
            roles=["member"],
            ttl_s=ttl_s,
            now=NOW,
        )

    def seal(self, body: BaseModel, *, now: float = NOW, kind: str = "test.ping", **kw: object) -> bytes:
        return seal(self.key, self.cert, kind, body, now, **kw)  # type: ignore[arg-type]  # test passthrough


def _open(raw: bytes, ca: CaKey, **kw: object) -> Verified:
    args: dict[str, object] = {
        "ca_public": ca.public_bytes,
        "now": NOW,
        "revoked": set(),
        "replay_cache": ReplayCache(),
        "schemas": SCHEMAS,
    }
    args.update(kw)
    return open_envelope(raw, **args)  # type: ignore[arg-type]  # test passthrough


def _reject(raw: bytes, ca: CaKey, **kw: object) -> AuthReason:
    with pytest.raises(AuthError) as e:
        _open(raw, ca, **kw)
    return e.value.reason


@pytest.fixture
def ca() -> CaKey:
    return CaKey.generate()


@pytest.fixture
def node(ca: CaKey) -> Node:
    return Node(ca)


def test_sealed_message_opens_with_typed_body(ca: CaKey, node: Node) -> None:
    v = _open(node.seal(Ping(seq=3, items=(1, 2), blob=b"\x00\xff")), ca)
    assert v.kind == "test.ping" and v.sender == node.key.node_id
    assert v.body == Ping(seq=3, items=(1, 2), blob=b"\x00\xff")
    assert v.cert == node.cert and v.ts == NOW and len(v.nonce) == 16 and v.to is None


def test_forged_signature_is_bad_signature(ca: CaKey, node: Node) -> None:
    inner_b, sig = msgpack.unpackb(node.seal(Ping(seq=1)))
    forged = pack([inner_b, bytes(64)])
    assert _reject(forged, ca) is AuthReason.BAD_SIGNATURE
    # a body swapped under the original signature
    inner = msgpack.unpackb(inner_b)
    inner["body"]["seq"] = 2
    assert _reject(pack([pack(inner), sig]), ca) is AuthReason.BAD_SIGNATURE


def test_message_signed_by_a_key_other_than_the_certs_is_bad_signature(ca: CaKey, node: Node) -> None:
    thief = NodeKey.generate()
    inner_b, _ = msgpack.unpackb(node.seal(Ping(seq=1)))
    assert _reject(pack([inner_b, thief.sign(b"aiosd-env-v1\x00" + inner_b)]), ca) is AuthReason.BAD_SIGNATURE


def test_cert_from_another_ca_is_unknown_ca(ca: CaKey) -> None:
    stranger = Node(CaKey.generate())
    assert _reject(stranger.seal(Ping(seq=1)), ca) is AuthReason.UNKNOWN_CA


def test_expired_cert_is_refused(ca: CaKey) -> None:
    short = Node(ca, ttl_s=10)
    assert _reject(short.seal(Ping(seq=1), now=NOW + 11), ca, now=NOW + 11) is AuthReason.EXPIRED_CERT


def test_revoked_sender_is_refused(ca: CaKey, node: Node) -> None:
    assert _reject(node.seal(Ping(seq=1)), ca, revoked={node.key.node_id}) is AuthReason.REVOKED


def test_replayed_nonce_is_refused(ca: CaKey, node: Node) -> None:
    cache = ReplayCache()
    raw = node.seal(Ping(seq=1))
    _open(raw, ca, replay_cache=cache)
    assert _reject(raw, ca, replay_cache=cache) is AuthReason.REPLAY


@pytest.mark.parametrize("offset_s", [-31.0, 31.0])
def test_stale_or_future_timestamp_is_refused(ca: CaKey, node: Node, offset_s: float) -> None:
    assert _reject(node.seal(Ping(seq=1), now=NOW + offset_s), ca) is AuthReason.STALE_TS
    _open(node.seal(Ping(seq=1), now=NOW + offset_s * 0.9), ca)


def test_oversized_envelope_is_refused_before_decoding(ca: CaKey, node: Node) -> None:
    raw = node.seal(Ping(seq=1, blob=b"x" * 2000))
    assert _reject(raw, ca, max_bytes=1024) is AuthReason.TOO_LARGE
    assert _reject(b"\xc1" * 5000, ca, max_bytes=1024) is AuthReason.TOO_LARGE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        b"\x92\x01\x02",
        pack([b"\x01", b"x" * 64]),
        pack({"a": 1}),
        pack([pack([1]), b"s" * 64]) + b"x",
    ],
)
def test_malformed_msgpack_is_refused(ca: CaKey, raw: bytes) -> None:
    assert _reject(raw, ca) is AuthReason.MALFORMED


def test_unknown_kind_is_refused(ca: CaKey, node: Node) -> None:
    assert _reject(node.seal(Ping(seq=1), kind="test.nope"), ca) is AuthReason.UNKNOWN_KIND


def test_bad_body_names_the_field(ca: CaKey, node: Node) -> None:
    class Loose(BaseModel):
        kind: Literal["test.ping"] = "test.ping"
        v: int = 1
        seq: int

    with pytest.raises(AuthError, match=r"body\.seq") as e:
        _open(node.seal(Loose(seq=-1)), ca)
    assert e.value.reason is AuthReason.BAD_BODY


def test_sender_field_must_match_the_cert(ca: CaKey, node: Node) -> None:
    inner_b, _ = msgpack.unpackb(node.seal(Ping(seq=1)))
    inner = msgpack.unpackb(inner_b)
    inner["sender"] = "someoneelse00000"
    ib = pack(inner)
    raw = pack([ib, node.key.sign(b"aiosd-env-v1\x00" + ib)])
    assert _reject(raw, ca) is AuthReason.SENDER_MISMATCH


def test_message_for_another_node_is_wrong_recipient(ca: CaKey, node: Node) -> None:
    raw = node.seal(Ping(seq=1), to=NodeId("bbbbbbbbbbbbbbbb"))
    assert _reject(raw, ca, me=NodeId("aaaaaaaaaaaaaaaa")) is AuthReason.WRONG_RECIPIENT
    assert _open(raw, ca, me=NodeId("bbbbbbbbbbbbbbbb")).to == "bbbbbbbbbbbbbbbb"


def test_unsupported_version_is_refused(ca: CaKey, node: Node) -> None:
    inner_b, _ = msgpack.unpackb(node.seal(Ping(seq=1)))
    inner = msgpack.unpackb(inner_b)
    inner["v"] = 2
    ib = pack(inner)
    assert _reject(pack([ib, node.key.sign(b"aiosd-env-v1\x00" + ib)]), ca) is AuthReason.UNSUPPORTED_VERSION


def test_seal_refuses_a_cert_of_another_key(ca: CaKey, node: Node) -> None:
    with pytest.raises(ValueError, match="cert"):
        seal(NodeKey.generate(), node.cert, "test.ping", Ping(seq=1), NOW)


def test_rejected_message_does_not_touch_the_replay_cache(ca: CaKey, node: Node) -> None:
    cache = ReplayCache()
    inner_b, _ = msgpack.unpackb(node.seal(Ping(seq=1)))
    _reject(pack([inner_b, bytes(64)]), ca, replay_cache=cache)
    assert len(cache) == 0


def test_verifier_counts_every_reason_and_logs_each_source_once(
    ca: CaKey, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    ver = EnvelopeVerifier(ca.public_bytes, SCHEMAS)
    raw = node.seal(Ping(seq=1))
    ver.open(raw, NOW, source="10.0.0.1:7701")
    with caplog.at_level(logging.WARNING, logger="federation.envelope"):
        for _ in range(5):
            with pytest.raises(AuthError):
                ver.open(raw, NOW, source="10.0.0.1:7701")
        with pytest.raises(AuthError):
            ver.open(b"junk", NOW, source="10.0.0.1:7701")
    m = ver.metrics()
    assert m["envelopes_accepted"] == 1
    assert m["envelopes_rejected_replay"] == 5 and m["envelopes_rejected_malformed"] == 1
    assert m["reject_logs_suppressed"] == 4
    assert [r.reason for r in caplog.records] == ["replay", "malformed"]  # type: ignore[attr-defined]
    assert all(r.getMessage() == "envelope rejected" for r in caplog.records)


def test_quiet_log_is_bounded() -> None:
    q = QuietLog(every_s=60, max_keys=3)
    assert all(q.should_log("r", str(i), 0.0) for i in range(10))
    assert len(q._last) == 3
    assert not q.should_log("r", "9", 1.0)
    assert q.should_log("r", "9", 61.0)


def test_schemas_of_refuses_duplicates_and_kindless_models() -> None:
    class NoKind(BaseModel):
        x: int

    class Dup(BaseModel):
        kind: Literal["test.ping"] = "test.ping"

    with pytest.raises(ValueError, match="NoKind.kind"):
        schemas_of([NoKind])
    with pytest.raises(ValueError, match="already registered"):
        schemas_of([Ping, Dup])


def test_cert_bytes_parameter_is_used_verbatim(ca: CaKey, node: Node) -> None:
    cb = node.cert.to_bytes()
    raw = seal(node.key, node.cert, "test.ping", Ping(seq=1), NOW, cert_bytes=cb)
    assert isinstance(_open(raw, ca).cert, NodeCert)


def test_every_reason_is_reachable_through_open_envelope(ca: CaKey, node: Node) -> None:
    """One crafted input per AuthReason (FORBIDDEN is the handlers' own): the table is complete."""

    def resign(mutate: dict[str, object], signer: NodeKey | None = None) -> bytes:
        inner_b, _ = msgpack.unpackb(node.seal(Ping(seq=1)))
        inner = msgpack.unpackb(inner_b) | mutate
        ib = pack(inner)
        return pack([ib, (signer or node.key).sign(b"aiosd-env-v1\x00" + ib)])

    other_ca = CaKey.generate()
    forged_cert = issue_cert(
        other_ca, node.key.public_bytes, network_id=other_ca.network_id, cluster="c", roles=["member"],
        ttl_s=60, now=NOW,
    ).model_copy(update={"network_id": ca.network_id})  # fmt: skip
    future = issue_cert(
        ca, node.key.public_bytes, network_id=ca.network_id, cluster="c", roles=["member"], ttl_s=9999,
        now=NOW + 5000,
    )  # fmt: skip
    replay = ReplayCache()
    seen_twice = node.seal(Ping(seq=1))
    _open(seen_twice, ca, replay_cache=replay)
    cases: dict[AuthReason, tuple[bytes, dict[str, object]]] = {
        AuthReason.TOO_LARGE: (b"x" * 100, {"max_bytes": 10}),
        AuthReason.MALFORMED: (b"\xc1", {}),
        AuthReason.UNSUPPORTED_VERSION: (resign({"v": 9}), {}),
        AuthReason.UNKNOWN_KIND: (resign({"kind": "x.y"}), {}),
        AuthReason.BAD_SIGNATURE: (resign({}, signer=NodeKey.generate()), {}),
        AuthReason.BAD_CERT_SIGNATURE: (resign({"cert": forged_cert.to_bytes()}), {}),
        AuthReason.UNKNOWN_CA: (Node(other_ca).seal(Ping(seq=1)), {}),
        AuthReason.CERT_NOT_YET_VALID: (resign({"cert": future.to_bytes()}), {}),
        AuthReason.EXPIRED_CERT: (node.seal(Ping(seq=1), now=NOW + 4000), {"now": NOW + 4000}),
        AuthReason.REVOKED: (node.seal(Ping(seq=1)), {"revoked": {node.cert.serial}}),
        AuthReason.SENDER_MISMATCH: (resign({"sender": "zzzzzzzzzzzzzzzz"}), {}),
        AuthReason.WRONG_RECIPIENT: (resign({"to": "zzzzzzzzzzzzzzzz"}), {"me": NodeId("aaaaaaaaaaaaaaaa")}),
        AuthReason.STALE_TS: (resign({"ts": NOW - 100.0}), {}),
        AuthReason.REPLAY: (seen_twice, {"replay_cache": replay}),
        AuthReason.BAD_BODY: (resign({"body": {"seq": "one"}}), {}),
    }
    assert set(cases) == set(AuthReason) - {AuthReason.FORBIDDEN}
    for reason, (raw, kw) in cases.items():
        assert _reject(raw, ca, **kw) is reason, reason
