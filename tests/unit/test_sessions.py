"""Session core (sans-IO): handshake checks, AEAD frames, rekey, admission gate."""

from __future__ import annotations

import os
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.certs import CertCache, NodeCert, Revocation, RevocationSet, issue_cert
from federation.errors import AuthReason, SessionError, SessionReason
from federation.identity import CaKey, NodeKey
from federation.sessions import (
    ClientHandshake,
    FrameLimits,
    GateLimits,
    HandshakeGate,
    Identity,
    Opener,
    Sealer,
    ServerHandshake,
    Session,
)
from federation.sessions.frames import OVERHEAD
from federation.sessions.handshake import MAGIC

NOW = time.time()


def _member(ca: CaKey, *, signer: CaKey | None = None, ttl_s: int = 3600, now: float = NOW
            ) -> tuple[NodeKey, NodeCert]:
    key = NodeKey.generate()
    cert = issue_cert(signer or ca, key.public_bytes, network_id=(signer or ca).network_id, cluster="c",
                      roles=["member"], ttl_s=ttl_s, now=now)
    return key, cert


def _ident(key: NodeKey, cert: NodeCert) -> Identity:
    return Identity(key, cert.to_bytes())


def _server(ca: CaKey, revoked: RevocationSet | None = None, **kw: object) -> tuple[ServerHandshake, NodeCert]:
    key, cert = _member(ca)
    hs = ServerHandshake(os.urandom, me=_ident(key, cert), ca_public=ca.public_bytes,
                         certs=CertCache(ca.public_bytes), revoked=revoked or RevocationSet(), **kw)  # type: ignore[arg-type]
    return hs, cert


def _client(ca: CaKey, key: NodeKey | None = None, cert: NodeCert | None = None, **kw: object) -> ClientHandshake:
    if key is None:
        key, cert = _member(ca)
    assert cert is not None
    return ClientHandshake(os.urandom, me=_ident(key, cert), certs=CertCache(ca.public_bytes), **kw)  # type: ignore[arg-type]


def _pair(ca: CaKey) -> tuple[Session, Session]:
    srv, _ = _server(ca)
    cli = _client(ca)
    m3, cs = cli.on_m2(srv.on_m1(cli.m1), NOW)
    return cs, srv.on_m3(m3, NOW)


def _reason(e: pytest.ExceptionInfo[SessionError]) -> str:
    return e.value.reason.value


def test_member_handshake_gives_matching_keys_and_both_identities() -> None:
    ca = CaKey.generate()
    srv, srv_cert = _server(ca)
    key, cert = _member(ca)
    cli = _client(ca, key, cert, expect=srv_cert.node_id)
    m2 = srv.on_m1(cli.m1)
    m3, c = cli.on_m2(m2, NOW)
    s = srv.on_m3(m3, NOW)
    assert c.peer == srv_cert and s.peer == cert and c.session_id == s.session_id
    assert bytes(s.opener.open(c.sealer.seal(b"hello", NOW), NOW)) == b"hello"
    assert bytes(c.opener.open(s.sealer.seal(b"back", NOW), NOW)) == b"back"
    # the identities never travel in the clear
    for wire in (cli.m1, m2, m3):
        assert cert.node_id.encode() not in wire and srv_cert.node_id.encode() not in wire
        assert b"member" not in wire


@pytest.mark.parametrize("case", ["other_network", "not_signed_by_ca", "revoked_node", "revoked_serial",
                                  "expired", "not_yet_valid"])
def test_server_refuses_a_client_without_a_valid_certificate(case: str) -> None:
    ca = CaKey.generate()
    revoked = RevocationSet()
    if case == "other_network":
        key, cert = _member(ca, signer=CaKey.generate())
    elif case == "not_signed_by_ca":  # our network id, someone else's signature
        key = NodeKey.generate()
        other = CaKey.generate()
        good = issue_cert(other, key.public_bytes, network_id=other.network_id, cluster="c", roles=["member"],
                          ttl_s=60, now=NOW)
        cert = good.model_copy(update={"network_id": ca.network_id})
    elif case == "expired":
        key, cert = _member(ca, ttl_s=60, now=NOW - 3600)
    elif case == "not_yet_valid":
        key, cert = _member(ca, now=NOW + 3600)
    else:
        key, cert = _member(ca)
        subject, kind = (cert.node_id, "node") if case == "revoked_node" else (cert.serial, "cert")
        revoked.add(Revocation(subject=subject, subject_kind=kind, revoked_at=int(NOW), by="admin"))
    srv, _ = _server(ca, revoked)
    cli = ClientHandshake(os.urandom, me=_ident(key, cert), certs=CertCache(ca.public_bytes))
    m3, _ = cli.on_m2(srv.on_m1(cli.m1), NOW)
    with pytest.raises(SessionError) as e:
        srv.on_m3(m3, NOW)
    want = {"other_network": AuthReason.UNKNOWN_CA, "not_signed_by_ca": AuthReason.BAD_CERT_SIGNATURE,
            "revoked_node": AuthReason.REVOKED, "revoked_serial": AuthReason.REVOKED,
            "expired": AuthReason.EXPIRED_CERT, "not_yet_valid": AuthReason.CERT_NOT_YET_VALID}[case]
    assert e.value.reason == want


def test_client_refuses_a_server_of_another_network_or_the_wrong_node() -> None:
    ca, other = CaKey.generate(), CaKey.generate()
    srv, _ = _server(other)
    cli = _client(ca)
    with pytest.raises(SessionError) as e:
        cli.on_m2(srv.on_m1(cli.m1), NOW)
    assert e.value.reason == AuthReason.UNKNOWN_CA
    srv, _ = _server(ca)
    cli = _client(ca, expect=NodeKey.generate().node_id)
    with pytest.raises(SessionError) as e:
        cli.on_m2(srv.on_m1(cli.m1), NOW)
    assert _reason(e) == "wrong_peer"


def test_a_man_in_the_middle_swapping_ephemeral_keys_fails() -> None:
    ca = CaKey.generate()
    srv, _ = _server(ca)
    cli = _client(ca)
    evil = ClientHandshake(os.urandom, me=None)  # the attacker's own ephemeral key toward the server
    m2 = srv.on_m1(evil.m1)
    with pytest.raises(SessionError) as e:  # client's e_c was swapped: m2 does not decrypt for it
        cli.on_m2(m2, NOW)
    assert _reason(e) == "bad_tag"
    srv, _ = _server(ca)
    m2 = srv.on_m1(cli.m1)
    tampered = m2[:40] + bytes([m2[40] ^ 1]) + m2[41:]
    with pytest.raises(SessionError) as e:
        _client(ca).on_m2(m2, NOW)  # another client's view of this m2 (other e_c): no
    assert _reason(e) == "bad_tag"
    with pytest.raises(SessionError):
        cli.on_m2(tampered, NOW)


def test_anonymous_join_session_pins_the_ca() -> None:
    ca = CaKey.generate()
    srv, srv_cert = _server(ca)
    cli = ClientHandshake(os.urandom, me=None, pin=ca.fingerprint, network_id=ca.network_id)
    m3, c = cli.on_m2(srv.on_m1(cli.m1), NOW)
    s = srv.on_m3(m3, NOW)
    assert s.peer is None and c.peer == srv_cert and cli.server_ca == ca.public_bytes
    assert bytes(s.opener.open(c.sealer.seal(b"join", NOW), NOW)) == b"join"
    for kw in ({"pin": CaKey.generate().fingerprint}, {"network_id": CaKey.generate().network_id}):
        srv, _ = _server(ca)
        cli = ClientHandshake(os.urandom, me=None, **kw)  # type: ignore[arg-type]
        with pytest.raises(SessionError) as e:
            cli.on_m2(srv.on_m1(cli.m1), NOW)
        assert _reason(e) == "ca_mismatch"
    srv, _ = _server(ca, allow_anonymous=False)
    with pytest.raises(SessionError) as e:
        srv.on_m1(ClientHandshake(os.urandom, me=None).m1)
    assert _reason(e) == "anonymous"


@pytest.mark.parametrize(("m1", "reason"), [
    (b"", "truncated"), (MAGIC + b"\x00" + b"k" * 31, "truncated"), (MAGIC + b"\x00" + b"k" * 33, "too_large"),
    (b"XX\x01\x00\x00" + b"k" * 32, "bad_version"), (MAGIC + b"\x07" + b"k" * 32, "malformed"),
    (MAGIC + b"\x00" + bytes(32), "bad_key"), (MAGIC + b"\x00" + b"\x01" + bytes(31), "bad_key"),
])
def test_bad_first_messages_are_refused_by_name(m1: bytes, reason: str) -> None:
    srv, _ = _server(CaKey.generate())
    with pytest.raises(SessionError) as e:
        srv.on_m1(m1)
    assert _reason(e) == reason


def test_handshake_messages_out_of_order_or_mangled() -> None:
    ca = CaKey.generate()
    srv, _ = _server(ca)
    with pytest.raises(SessionError) as e:
        srv.on_m3(b"x" * 40, NOW)
    assert _reason(e) == "unexpected"
    cli = _client(ca)
    srv.on_m1(cli.m1)
    with pytest.raises(SessionError) as e:
        srv.on_m1(cli.m1)
    assert _reason(e) == "unexpected"
    for bad, reason in ((b"x" * 10, "truncated"), (b"x" * 5000, "too_large"), (b"x" * 100, "bad_tag")):
        with pytest.raises(SessionError) as e:
            srv.on_m3(bad, NOW)
        assert _reason(e) == reason
    for bad, reason in ((b"x" * 10, "truncated"), (b"x" * 5000, "too_large"), (b"x" * 100, "bad_tag")):
        with pytest.raises(SessionError) as e:
            cli.on_m2(bad, NOW)
        assert _reason(e) == reason


def test_frames_flipped_replayed_truncated_oversized_reordered_or_foreign_are_refused() -> None:
    ca = CaKey.generate()
    c, s = _pair(ca)
    f0, f1, f2 = (c.sealer.seal(b"m%d" % i, NOW) for i in range(3))
    with pytest.raises(SessionError) as e:
        s.opener.open(f1, NOW)
    assert _reason(e) == "out_of_order"
    assert bytes(s.opener.open(f0, NOW)) == b"m0"
    with pytest.raises(SessionError) as e:
        s.opener.open(f0, NOW)
    assert _reason(e) == "replay"
    for i in range(len(f1)):  # every single flipped bit (header included) is refused
        bad = f1[:i] + bytes([f1[i] ^ 0x80]) + f1[i + 1:]
        with pytest.raises(SessionError):
            s.opener.open(bad, NOW)
    with pytest.raises(SessionError) as e:
        s.opener.open(f1[:OVERHEAD - 1], NOW)
    assert _reason(e) == "truncated"
    with pytest.raises(SessionError) as e:
        s.opener.open(f1[:-1], NOW)
    assert _reason(e) == "bad_tag"
    assert bytes(s.opener.open(f1, NOW)) == b"m1"  # failed frames never moved the opener
    old_c, _ = _pair(ca)  # a frame of another (earlier) session between other keys
    with pytest.raises(SessionError) as e:
        foreign = old_c.sealer.seal(b"x", NOW)
        s.opener.open(f2[:12] + foreign[12:], NOW)
    assert _reason(e) == "bad_tag"
    assert bytes(s.opener.open(f2, NOW)) == b"m2"


def test_oversized_frame_is_refused_by_its_length_alone() -> None:
    lim = FrameLimits(max_frame_bytes=1024)
    op = Opener(os.urandom(32), NOW, lim)
    with pytest.raises(SessionError) as e:
        op.check_size(10**12)  # a length prefix: refused before anything is read or allocated
    assert _reason(e) == "too_large"
    with pytest.raises(SessionError) as e:
        op.open(b"\x00" * 1025, NOW)
    assert _reason(e) == "too_large"
    with pytest.raises(ValueError, match="plaintext"):
        Sealer(os.urandom(32), NOW, lim).seal(b"x" * 1000, NOW)


def test_rekey_after_n_frames_and_after_an_hour_drops_old_keys() -> None:
    key = os.urandom(32)
    lim = FrameLimits(rekey_frames=3)
    tx, rx = Sealer(key, NOW, lim), Opener(key, NOW, lim)
    frames = [tx.seal(b"%d" % i, NOW) for i in range(7)]
    assert [bytes(rx.open(f, NOW)) for f in frames] == [b"%d" % i for i in range(7)]
    assert tx.epoch == rx.epoch == 2 and tx.rekeys == rx.rekeys == 2
    with pytest.raises(SessionError) as e:
        rx.open(frames[0], NOW)
    assert _reason(e) == "replay"
    tx2, rx2 = Sealer(key, NOW, FrameLimits()), Opener(key, NOW, FrameLimits())
    assert bytes(rx2.open(tx2.seal(b"a", NOW), NOW)) == b"a"
    later = NOW + 3600
    f = tx2.seal(b"b", later)
    assert tx2.epoch == 1 and bytes(rx2.open(f, later)) == b"b" and rx2.epoch == 1
    # a sender that never rekeys is refused past the lifetime and a grace period
    stuck_tx, stuck_rx = Sealer(key, NOW, FrameLimits(rekey_s=10**9)), Opener(key, NOW, FrameLimits())
    with pytest.raises(SessionError) as e:
        stuck_rx.open(stuck_tx.seal(b"c", NOW + 4000), NOW + 4000)
    assert _reason(e) == "stale_key"
    jump = struct.pack(">IQ", 5, 0) + b"\x00" * 20
    with pytest.raises(SessionError) as e:
        Opener(key, NOW, FrameLimits()).open(jump, NOW)
    assert _reason(e) == "bad_epoch"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=10_000), st.integers(0, 255))
def test_no_mutated_or_random_frame_is_ever_accepted(junk: bytes, pos: int, xor: int) -> None:
    key = os.urandom(32)
    frame = Sealer(key, NOW, FrameLimits()).seal(b"payload of some length", NOW)
    rx = Opener(key, NOW, FrameLimits())
    for cand in (junk, frame[: pos % len(frame)], frame[:pos % len(frame)] + bytes([(frame[pos % len(frame)]
                 ^ (xor or 1))]) + frame[pos % len(frame) + 1:]):
        with pytest.raises(SessionError):
            rx.open(cand, NOW)
    assert bytes(rx.open(frame, NOW)) == b"payload of some length"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_handshake_messages_only_raise_session_errors(data: bytes) -> None:
    ca = CaKey.generate()
    srv, _ = _server(ca)
    with pytest.raises(SessionError):
        srv.on_m1(data)
    with pytest.raises(SessionError):
        _client(ca).on_m2(data, NOW)


def test_gate_rate_limits_per_source_and_caps_pending() -> None:
    gate = HandshakeGate(GateLimits(per_source_rate_s=10, per_source_burst=5, max_pending=8, max_sources=2))
    got = [gate.admit("1.2.3.4", 100.0) for _ in range(7)]
    assert got[:5] == [None] * 5 and {r.value for r in got[5:] if r} == {"rate_limited"}
    for _ in range(5):
        gate.done()
    assert gate.admit("1.2.3.4", 100.2) is None  # 0.2 s refilled two tokens
    gate.done()
    assert all(gate.admit(f"s{i}", 100.0) is None for i in range(3)) and gate.evictions >= 1
    gate.pending = 8
    assert gate.admit("fresh", 100.0) == SessionReason.BUSY
