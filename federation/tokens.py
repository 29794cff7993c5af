"""Join tokens: create (admin), parse + CA pinning + proof (joiner), admit (seed). Sans-IO.

The token secret is the seed of an ed25519 key. The stored, replicated TokenRecord holds only
its public half (a one-way image of the secret), so reading a record never lets anyone join.
The joiner proves the secret by signing its own node public key + nonce + ts: the raw secret
never crosses the network and a captured proof can only ever certify the joiner's own key.
Persistence, replication and the join RPC live elsewhere (aiosd/, transport).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Container, Iterable
from typing import Annotated, Any, Literal

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import nacl.signing
from pydantic import Field, ValidationError

from federation.certs import (
    MAX_CERT_BYTES,
    MSGPACK_ERRORS,
    NodeCert,
    Role,
    first_error,
    pack,
    verify_cert,
)
from federation.errors import AuthError, AuthReason, TokenError, TokenReason
from federation.identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    fingerprint_of,
    node_id_of,
    verify_signature,
)
from federation.strict import Wire

TOKEN_PREFIX = "aiosd1."
# A token is ~200 chars with a few seeds; 4 KiB leaves room for 50 seed addresses and refuses
# pasted garbage before decoding it.
MAX_TOKEN_CHARS = 4096
MAX_SEEDS = 50
MAX_TOKEN_TTL_S = 30 * 24 * 3600  # tokens are for joining now, not long-lived credentials
MAX_USES = 100_000
# A join proof is fresh for this long either side of the seed's clock (joiners may lack NTP).
JOIN_MAX_SKEW_S = 300.0
_JOIN_DOMAIN = b"aiosd-join-v1\x00"
_SECRET_BYTES = 32

_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
_Addr = Annotated[str, Field(min_length=3, max_length=260, pattern=r"^\S+:[0-9]{1,5}$")]
_Fingerprint = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
_Hex = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[0-9a-f]+$")]


class JoinToken(Wire):
    """What `aiosd token create` prints and `aiosd join` parses (holds the secret: never log it)."""

    kind: Literal["aiosd.token"] = "aiosd.token"
    v: Literal[1] = 1
    network_id: _Id
    ca_fingerprint: _Fingerprint
    seeds: tuple[_Addr, ...] = Field(max_length=MAX_SEEDS)
    cluster: _Id
    token_id: _Hex
    secret: bytes = Field(min_length=_SECRET_BYTES, max_length=_SECRET_BYTES, repr=False)
    expires: int = Field(ge=0)

    def to_string(self) -> str:
        """The compact, copy-pasteable form: 'aiosd1.' + base64url(msgpack list), no padding."""
        fp = bytes.fromhex(self.ca_fingerprint.removeprefix("sha256:"))
        body = [
            self.v,
            self.network_id,
            fp,
            list(self.seeds),
            self.cluster,
            self.token_id,
            self.secret,
            self.expires,
        ]
        return TOKEN_PREFIX + base64.urlsafe_b64encode(pack(body)).rstrip(b"=").decode("ascii")


class TokenRecord(Wire):
    """The admin-side record of a token (replicated); holds no secret, only its verify key."""

    kind: Literal["aiosd.token_record"] = "aiosd.token_record"
    v: Literal[1] = 1
    token_id: _Hex
    network_id: _Id
    cluster: _Id
    roles: tuple[Role, ...] = ("member",)
    verify_key: bytes = Field(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)
    created_at: int = Field(ge=0)
    expires: int = Field(ge=0)
    uses_total: int = Field(ge=1, le=MAX_USES)
    uses_left: int = Field(ge=0, le=MAX_USES)
    revoked: bool = False
    used_by: tuple[str, ...] = Field(default=(), max_length=64)  # last node ids admitted (audit)


class JoinRequest(Wire):
    """What the joiner sends to a seed: proof that it holds the token secret, bound to its key."""

    kind: Literal["aiosd.join.request"] = "aiosd.join.request"
    v: Literal[1] = 1
    token_id: _Hex
    network_id: _Id
    node_public: bytes = Field(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)
    nonce: bytes = Field(min_length=16, max_length=32)
    ts: float
    proof: bytes = Field(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)


class JoinAnswer(Wire):
    """The seed's answer to an admitted join: the CA key (pinned by the token) and the new cert."""

    kind: Literal["aiosd.join.answer"] = "aiosd.join.answer"
    v: Literal[1] = 1
    ca_public: bytes = Field(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)
    cert: bytes = Field(max_length=MAX_CERT_BYTES)
    seeds: tuple[_Addr, ...] = Field(default=(), max_length=MAX_SEEDS)


def accept_join_answer(token: JoinToken, answer: JoinAnswer, node_public: bytes, now: float) -> NodeCert:
    """The joiner's check of the seed's answer: pinned CA, valid cert, for our own key.

    Raises:
        TokenError(CA_MISMATCH): the seed's CA is not the one the token pins.
        AuthError: the cert is malformed, not signed by that CA, expired, or for another key.
    """
    check_ca(token, answer.ca_public)
    cert = NodeCert.from_bytes(answer.cert)
    verify_cert(cert, answer.ca_public, now)
    if cert.public_key != node_public:
        raise AuthError(AuthReason.SENDER_MISMATCH, "cert.public_key: not our key")
    if cert.network_id != token.network_id:
        raise AuthError(AuthReason.UNKNOWN_CA, "cert.network_id: not the token's network")
    return cert


def create_token(
    network_id: str,
    ca_fingerprint: str,
    seeds: Iterable[str],
    cluster: str,
    ttl_s: int,
    uses: int,
    now: float,
    *,
    roles: tuple[Role, ...] = ("member",),
    secret: bytes | None = None,
) -> tuple[str, TokenRecord]:
    """Make a join token; return its string (show once) and the record to store.

    Raises:
        ValueError: a bad argument; the message names it.
    """
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl_s: must be in 1..{MAX_TOKEN_TTL_S}")
    if not 0 < uses <= MAX_USES:
        raise ValueError(f"uses: must be in 1..{MAX_USES}")
    secret = secret if secret is not None else os.urandom(_SECRET_BYTES)
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"secret: must be {_SECRET_BYTES} bytes")
    token_id = os.urandom(8).hex()
    expires = int(now) + ttl_s
    try:
        token = JoinToken(
            network_id=network_id,
            ca_fingerprint=ca_fingerprint,
            seeds=tuple(seeds),
            cluster=cluster,
            token_id=token_id,
            secret=secret,
            expires=expires,
        )
        record = TokenRecord(
            token_id=token_id,
            network_id=network_id,
            cluster=cluster,
            roles=roles,
            verify_key=_token_key(secret).verify_key.encode(),
            created_at=int(now),
            expires=expires,
            uses_total=uses,
            uses_left=uses,
        )
    except ValidationError as e:
        raise ValueError(first_error(e)) from None
    return token.to_string(), record


def parse_token(s: str) -> JoinToken:
    """Decode a token string (surrounding whitespace ignored).

    Raises:
        TokenError(MALFORMED): the detail says what is wrong.
    """
    s = s.strip()
    if len(s) > MAX_TOKEN_CHARS:
        raise TokenError(TokenReason.MALFORMED, f"longer than {MAX_TOKEN_CHARS} characters")
    if not s.startswith(TOKEN_PREFIX):
        raise TokenError(TokenReason.MALFORMED, f"does not start with {TOKEN_PREFIX!r}")
    b64 = s[len(TOKEN_PREFIX) :]
    try:
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), altchars=b"-_", validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise TokenError(TokenReason.MALFORMED, "not valid base64url") from None
    try:
        obj = msgpack.unpackb(raw, raw=False, use_list=False)
    except MSGPACK_ERRORS:
        raise TokenError(TokenReason.MALFORMED, "payload is not msgpack") from None
    if not isinstance(obj, tuple) or len(obj) != 8 or obj[0] != 1:
        raise TokenError(TokenReason.MALFORMED, "unknown token layout or version")
    _, network_id, fp, seeds, cluster, token_id, secret, expires = obj
    if not isinstance(fp, bytes) or len(fp) != 32:
        raise TokenError(TokenReason.MALFORMED, "ca_fingerprint: must be 32 bytes")
    try:
        return JoinToken(
            network_id=network_id,
            ca_fingerprint="sha256:" + fp.hex(),
            seeds=seeds,
            cluster=cluster,
            token_id=token_id,
            secret=secret,
            expires=expires,
        )
    except ValidationError as e:
        raise TokenError(TokenReason.MALFORMED, first_error(e)) from None


def check_ca(token: JoinToken, ca_public: bytes) -> None:
    """Pin the CA: the seed's CA public key must match the token's fingerprint and network.

    Raises:
        TokenError(CA_MISMATCH): the seed belongs to another CA (or is an impostor).
    """
    if fingerprint_of(ca_public) != token.ca_fingerprint:
        raise TokenError(TokenReason.CA_MISMATCH, "fingerprint differs")


def make_join_request(
    token: JoinToken, node_public: bytes, now: float, nonce: bytes | None = None
) -> JoinRequest:
    """The joiner's proof of the token secret, bound to its own node key (sent to a seed)."""
    nonce = nonce if nonce is not None else os.urandom(16)
    msg = _proof_bytes(token.token_id, token.network_id, node_public, nonce, now)
    return JoinRequest(
        token_id=token.token_id,
        network_id=token.network_id,
        node_public=node_public,
        nonce=nonce,
        ts=float(now),
        proof=_token_key(token.secret).sign(msg).signature,
    )


def admit(
    record: TokenRecord,
    request: JoinRequest,
    now: float,
    *,
    revoked: Container[str] = frozenset(),
    max_skew_s: float = JOIN_MAX_SKEW_S,
) -> TokenRecord:
    """Check a join request against the token record; return the record with one use spent.

    The proof is checked first so a caller without the secret learns nothing of the token's
    state. The caller stores the returned record, then issues the cert; replays of a request
    (same nonce) are the caller's replay cache's business (a replay can only re-certify the
    same key and burn a use).

    Raises:
        TokenError: UNKNOWN_TOKEN, NETWORK_MISMATCH, WRONG_SECRET, REVOKED, EXPIRED, USED_UP.
    """
    if request.token_id != record.token_id:
        raise TokenError(TokenReason.UNKNOWN_TOKEN, "token_id differs from the record")
    if request.network_id != record.network_id:
        raise TokenError(TokenReason.NETWORK_MISMATCH)
    msg = _proof_bytes(request.token_id, request.network_id, request.node_public, request.nonce, request.ts)
    if not verify_signature(record.verify_key, msg, request.proof):
        raise TokenError(TokenReason.WRONG_SECRET)
    if abs(now - request.ts) > max_skew_s:
        raise TokenError(TokenReason.WRONG_SECRET, "proof timestamp outside the allowed clock skew")
    if record.revoked or record.token_id in revoked:
        raise TokenError(TokenReason.REVOKED)
    if now >= record.expires:
        raise TokenError(TokenReason.EXPIRED)
    if record.uses_left <= 0:
        raise TokenError(TokenReason.USED_UP)
    used_by = (record.used_by + (node_id_of(request.node_public),))[-64:]
    return record.model_copy(update={"uses_left": record.uses_left - 1, "used_by": used_by})


def revoke_token(record: TokenRecord) -> TokenRecord:
    """The record marked revoked (idempotent); admit() refuses it from then on."""
    return record.model_copy(update={"revoked": True})


def record_from_obj(obj: Any) -> TokenRecord:
    """Validate a stored/replicated record.

    Raises:
        TokenError(MALFORMED): the detail names the field.
    """
    try:
        return TokenRecord.model_validate(obj)
    except ValidationError as e:
        raise TokenError(TokenReason.MALFORMED, first_error(e)) from None


def _token_key(secret: bytes) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(secret)


def _proof_bytes(token_id: str, network_id: str, node_public: bytes, nonce: bytes, ts: float) -> bytes:
    return _JOIN_DOMAIN + pack([token_id, network_id, node_public, nonce, float(ts)])


__all__ = [
    "JOIN_MAX_SKEW_S",
    "MAX_TOKEN_CHARS",
    "TOKEN_PREFIX",
    "JoinAnswer",
    "JoinRequest",
    "JoinToken",
    "TokenRecord",
    "accept_join_answer",
    "admit",
    "check_ca",
    "create_token",
    "make_join_request",
    "parse_token",
    "record_from_obj",
    "revoke_token",
]
