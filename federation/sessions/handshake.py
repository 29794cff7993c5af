"""Session handshake (sans-IO): ephemeral X25519 both ways, transcript signed by both node keys.

Three messages, SIGMA-I shape (identities travel encrypted, each side signs the transcript hash
that binds both ephemeral keys):

    m1  client → server   MAGIC(4) || mode(1) || e_c(32)                      mode 0 member, 1 anonymous
    m2  server → client   e_s(32) || AEAD(k_s2c_hs, ad=h1, msgpack [cert, sig_s, ca_public|nil])
    m3  client → server   AEAD(k_c2s_hs, ad=h2, msgpack [cert, sig_c])  (anonymous: [nil, nil])

    dh = X25519(e, E);  h1 = H(PROTO || m1 || e_s);  h2 = H(h1 || m2);  h3 = H(h2 || m3)
    handshake keys = KDF(dh, "hs-c2s"/"hs-s2c", h1); traffic keys = KDF(dh, "c2s"/"s2c", h3)
    sig_s = ed25519(server key, "aiosd-sess-s\\0" || h1), sig_c = ed25519(client key, "aiosd-sess-c\\0" || h2)

Certificates are checked by the same CertCache / verify_cert as envelopes (CA, validity window,
revocation, network id). Node keys only sign: a stolen node key cannot recompute dh, so recorded
sessions stay sealed (forward secrecy). An anonymous client (a joiner, no cert yet) checks the
server's CA against a pinned fingerprint or network id before it sends anything of its own.
Time and randomness come in; nothing here does IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container
from dataclasses import dataclass

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import nacl.bindings
import nacl.exceptions

from federation.certs import MAX_CERT_BYTES, MSGPACK_ERRORS, CertCache, NodeCert, pack, verify_cert
from federation.errors import AuthError, SessionError, SessionReason
from federation.identity import NodeKey, network_id_of, verify_signature
from federation.sansio import NodeId
from federation.sessions.frames import DEFAULT_LIMITS, KEY_BYTES, FrameLimits, Opener, Sealer, kdf

MAGIC = b"AS\x01\x00"  # protocol + version: a new handshake layout gets a new last-but-one byte
PROTO = b"aiosd-session-v1"
MODE_MEMBER, MODE_ANONYMOUS = 0, 1
M1_BYTES = len(MAGIC) + 1 + 32
MAX_M2_BYTES = 32 + 16 + MAX_CERT_BYTES + 64 + 32 + 32
MAX_M3_BYTES = 16 + MAX_CERT_BYTES + 64 + 32
CIPHER = "x25519-ed25519-chacha20poly1305-blake2b"
_SIG_S, _SIG_C = b"aiosd-sess-s\x00", b"aiosd-sess-c\x00"
_ZERO_NONCE = bytes(12)
_encrypt = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt
_decrypt = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt
_blake2b = nacl.bindings.crypto_generichash_blake2b_salt_personal

Rng = Callable[[int], bytes]


@dataclass(slots=True)
class Session:
    """An established session: the peer (None when anonymous), both directions' keys."""

    peer: NodeCert | None
    sealer: Sealer
    opener: Opener
    session_id: bytes  # 8 bytes of h3, for logs and doctor
    started: float
    initiator: bool

    @property
    def peer_id(self) -> NodeId | None:
        return None if self.peer is None else NodeId(self.peer.node_id)

    @property
    def rekeys(self) -> int:
        return self.sealer.rekeys + self.opener.rekeys


def _h(*parts: bytes) -> bytes:
    out: bytes = _blake2b(b"".join(parts), digest_size=32, person=b"aiosd-hs-hash\x00\x00\x00")
    return out


def _ephemeral(rng: Rng) -> tuple[bytes, bytes]:
    sk = rng(32)
    return sk, nacl.bindings.crypto_scalarmult_base(sk)


def _dh(sk: bytes, peer_public: bytes) -> bytes:
    try:
        shared: bytes = nacl.bindings.crypto_scalarmult(sk, peer_public)
    except nacl.exceptions.RuntimeError:  # libsodium refuses a low-order point (all-zero result)
        raise SessionError(SessionReason.BAD_KEY, "ephemeral key: low-order point") from None
    if shared == bytes(32):
        raise SessionError(SessionReason.BAD_KEY, "ephemeral key: all-zero shared secret")
    return shared


def _open_payload(key: bytes, ad: bytes, sealed: bytes, n: int) -> tuple[object, ...]:
    try:
        plain = _decrypt(sealed, ad, _ZERO_NONCE, key)
    except nacl.exceptions.CryptoError:
        raise SessionError(SessionReason.BAD_TAG, "handshake: authentication failed") from None
    try:
        obj = msgpack.unpackb(plain, raw=False, use_list=False)
    except MSGPACK_ERRORS:
        raise SessionError(SessionReason.MALFORMED, "handshake payload: not msgpack") from None
    if not isinstance(obj, tuple) or len(obj) != n:
        raise SessionError(SessionReason.MALFORMED, f"handshake payload: not a {n}-array")
    return obj


def _session(dh: bytes, h3: bytes, now: float, limits: FrameLimits, *, initiator: bool,
             peer: NodeCert | None) -> Session:
    c2s, s2c = kdf(dh, b"aiosd-c2s", h3), kdf(dh, b"aiosd-s2c", h3)
    send, recv = (c2s, s2c) if initiator else (s2c, c2s)
    return Session(peer, Sealer(send, now, limits), Opener(recv, now, limits), h3[:8], now, initiator)


def _check_sig(cert: NodeCert, domain: bytes, h: bytes, sig: object) -> None:
    if not isinstance(sig, bytes) or not verify_signature(cert.public_key, domain + h, sig):
        raise SessionError(SessionReason.BAD_SIGNATURE, "handshake: transcript signature invalid")


@dataclass(frozen=True, slots=True)
class Identity:
    """What a node proves itself with: its key and the bytes of its CA-signed cert."""

    key: NodeKey
    cert_bytes: bytes


class ClientHandshake:
    """The connecting side. Member: `me` set, the server's cert checked by `certs` (+ `revoked`).
    Anonymous (join): `me` None, the server's CA must match `pin` (fingerprint) or `network_id`."""

    def __init__(self, rng: Rng, *, me: Identity | None, certs: CertCache | None = None,
                 revoked: Container[str] = frozenset(), expect: NodeId | None = None,
                 pin: str | None = None, network_id: str | None = None,
                 limits: FrameLimits = DEFAULT_LIMITS) -> None:
        if me is not None and certs is None:
            raise ValueError("certs: a member handshake needs the CA's cert cache")
        self.me, self.certs, self.revoked, self.expect = me, certs, revoked, expect
        self.pin, self.network_id, self.limits = pin, network_id, limits
        self._sk, self._pk = _ephemeral(rng)
        self.m1 = MAGIC + bytes([MODE_MEMBER if me is not None else MODE_ANONYMOUS]) + self._pk
        self.server_ca: bytes | None = None

    def on_m2(self, m2: bytes, now: float) -> tuple[bytes, Session]:
        """Check the server's answer; return m3 and the session (usable once m3 is sent).

        Raises:
            SessionError: TOO_LARGE, TRUNCATED, BAD_KEY, BAD_TAG, MALFORMED, BAD_SIGNATURE,
                WRONG_PEER, CA_MISMATCH, or the cert's AuthReason (unknown_ca, revoked, ...).
        """
        if len(m2) > MAX_M2_BYTES:
            raise SessionError(SessionReason.TOO_LARGE, f"m2: {len(m2)} > {MAX_M2_BYTES} bytes")
        if len(m2) < 32 + 16:
            raise SessionError(SessionReason.TRUNCATED, "m2: too short")
        e_s = m2[:32]
        dh = _dh(self._sk, e_s)
        h1 = _h(PROTO, self.m1, e_s)
        cert_b, sig, ca_public = _open_payload(kdf(dh, b"aiosd-hs-s2c", h1), h1, m2[32:], 3)
        if not isinstance(cert_b, bytes):
            raise SessionError(SessionReason.MALFORMED, "m2.cert: not bytes")
        try:
            cert = self._server_cert(cert_b, ca_public, now)
        except AuthError as e:
            raise SessionError(e.reason, e.detail) from None
        _check_sig(cert, _SIG_S, h1, sig)
        if self.expect is not None and cert.node_id != self.expect:
            raise SessionError(SessionReason.WRONG_PEER, f"server is node {cert.node_id}, not {self.expect}")
        h2 = _h(h1, m2)
        if self.me is None:
            payload = pack([None, None])
        else:
            payload = pack([self.me.cert_bytes, self.me.key.sign(_SIG_C + h2)])
        m3 = _encrypt(payload, h2, _ZERO_NONCE, kdf(dh, b"aiosd-hs-c2s", h1))
        return m3, _session(dh, _h(h2, m3), now, self.limits, initiator=True, peer=cert)

    def _server_cert(self, cert_b: bytes, ca_public: object, now: float) -> NodeCert:
        if self.me is not None and self.certs is not None:  # a member (__init__ makes sure of certs)
            return self.certs.verify(cert_b, now, self.revoked)
        if not isinstance(ca_public, bytes) or len(ca_public) != 32:
            raise SessionError(SessionReason.MALFORMED, "m2.ca_public: not a 32-byte key")
        if self.pin is not None and "sha256:" + hashlib.sha256(ca_public).hexdigest() != self.pin:
            raise SessionError(SessionReason.CA_MISMATCH, "the seed's CA is not the pinned fingerprint")
        if self.network_id is not None and network_id_of(ca_public) != self.network_id:
            raise SessionError(SessionReason.CA_MISMATCH, "the seed's CA is not of the token's network")
        self.server_ca = ca_public
        cert = NodeCert.from_bytes(cert_b)
        verify_cert(cert, ca_public, now)
        return cert


class ServerHandshake:
    """The accepting side: answers m1, then checks m3 (the client's cert and signature)."""

    def __init__(self, rng: Rng, *, me: Identity, ca_public: bytes, certs: CertCache,
                 revoked: Container[str] = frozenset(), allow_anonymous: bool = True,
                 limits: FrameLimits = DEFAULT_LIMITS) -> None:
        self.me, self.ca_public, self.certs, self.revoked = me, ca_public, certs, revoked
        self.allow_anonymous, self.limits = allow_anonymous, limits
        self._rng = rng
        self._state: tuple[bytes, bytes, bytes, int] | None = None  # dh, h1, h2, mode

    def on_m1(self, m1: bytes) -> bytes:
        """Answer the client's first message with m2.

        Raises:
            SessionError: TOO_LARGE, TRUNCATED, BAD_VERSION, MALFORMED, ANONYMOUS, BAD_KEY, UNEXPECTED.
        """
        if self._state is not None:
            raise SessionError(SessionReason.UNEXPECTED, "m1: handshake already started")
        if len(m1) > M1_BYTES:
            raise SessionError(SessionReason.TOO_LARGE, f"m1: {len(m1)} > {M1_BYTES} bytes")
        if len(m1) < M1_BYTES:
            raise SessionError(SessionReason.TRUNCATED, f"m1: {len(m1)} < {M1_BYTES} bytes")
        if m1[: len(MAGIC)] != MAGIC:
            raise SessionError(SessionReason.BAD_VERSION, "m1: not an aiosd v1 session")
        mode = m1[len(MAGIC)]
        if mode not in (MODE_MEMBER, MODE_ANONYMOUS):
            raise SessionError(SessionReason.MALFORMED, f"m1.mode: {mode}")
        if mode == MODE_ANONYMOUS and not self.allow_anonymous:
            raise SessionError(SessionReason.ANONYMOUS, "m1: anonymous sessions are not served")
        sk, e_s = _ephemeral(self._rng)
        dh = _dh(sk, m1[len(MAGIC) + 1:])
        h1 = _h(PROTO, m1, e_s)
        ca = self.ca_public if mode == MODE_ANONYMOUS else None
        payload = pack([self.me.cert_bytes, self.me.key.sign(_SIG_S + h1), ca])
        m2 = e_s + _encrypt(payload, h1, _ZERO_NONCE, kdf(dh, b"aiosd-hs-s2c", h1))
        self._state = (dh, h1, _h(h1, m2), mode)
        return m2

    def on_m3(self, m3: bytes, now: float) -> Session:
        """Check the client's identity; the session (peer None for an anonymous client).

        Raises:
            SessionError: UNEXPECTED, TOO_LARGE, TRUNCATED, BAD_TAG, MALFORMED, BAD_SIGNATURE,
                or the cert's AuthReason (unknown_ca, revoked, expired_cert, ...).
        """
        if self._state is None:
            raise SessionError(SessionReason.UNEXPECTED, "m3: before m1")
        dh, h1, h2, mode = self._state
        if len(m3) > MAX_M3_BYTES:
            raise SessionError(SessionReason.TOO_LARGE, f"m3: {len(m3)} > {MAX_M3_BYTES} bytes")
        if len(m3) < 16:
            raise SessionError(SessionReason.TRUNCATED, "m3: too short")
        cert_b, sig = _open_payload(kdf(dh, b"aiosd-hs-c2s", h1), h2, m3, 2)
        h3 = _h(h2, m3)
        if mode == MODE_ANONYMOUS:
            if cert_b is not None or sig is not None:
                raise SessionError(SessionReason.MALFORMED, "m3: an anonymous client sends no cert")
            return _session(dh, h3, now, self.limits, initiator=False, peer=None)
        if not isinstance(cert_b, bytes):
            raise SessionError(SessionReason.MALFORMED, "m3.cert: not bytes")
        try:
            cert = self.certs.verify(cert_b, now, self.revoked)
        except AuthError as e:
            raise SessionError(e.reason, e.detail) from None
        _check_sig(cert, _SIG_C, h2, sig)
        return _session(dh, h3, now, self.limits, initiator=False, peer=cert)


__all__ = [
    "CIPHER",
    "KEY_BYTES",
    "M1_BYTES",
    "MAGIC",
    "ClientHandshake",
    "Identity",
    "Rng",
    "ServerHandshake",
    "Session",
]
