"""p2p kinds of the membership service (besides `swim.*`): join hello, renewal, revocations.

Revocations are self-authenticating (signed by an admin node whose certificate chains to the CA),
so any node may relay them: a broadcast on `node remove` plus digest-driven anti-entropy (SWIM meta
`rv`) make every node converge. Pure functions and models; no IO.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from federation.certs import MAX_CERT_BYTES, NodeCert, Revocation, pack, verify_cert
from federation.errors import AuthError, AuthReason
from federation.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeKey, verify_signature
from federation.strict import Wire

_REVOKE_DOMAIN = b"aiosd-revocation-v1\x00"
# 2000 signed entries x ~450 B stay under the 1 MiB envelope cap; far above any real removal count.
MAX_REVOCATIONS = 2000



class JoinHello(Wire):
    """Pre-trust: 'who are you?' (the joiner pins the CA before proving its token; doctor's probe)."""

    kind: Literal["aiosd.join.hello"] = "aiosd.join.hello"
    v: Literal[1] = 1


class JoinHelloAnswer(Wire):
    kind: Literal["aiosd.join.hello_answer"] = "aiosd.join.hello_answer"
    v: Literal[1] = 1
    ca_public: bytes = Field(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)
    network_id: str = Field(max_length=64)
    node_id: str = Field(max_length=64)
    can_admit: bool
    time: float  # the seed's wall clock (doctor: clock skew)


class RenewRequest(Wire):
    """Ask a CA holder for a fresh certificate for the sender's (still valid) key."""

    kind: Literal["membership.renew"] = "membership.renew"
    v: Literal[1] = 1


class RenewAnswer(Wire):
    kind: Literal["membership.renew_answer"] = "membership.renew_answer"
    v: Literal[1] = 1
    cert: bytes = Field(max_length=MAX_CERT_BYTES)


class SignedRevocation(Wire):
    kind: Literal["membership.revocation"] = "membership.revocation"
    v: Literal[1] = 1
    revocation: Revocation
    signer_cert: bytes = Field(max_length=MAX_CERT_BYTES)
    sig: Annotated[bytes, Field(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)]


class RevokeBroadcast(Wire):
    kind: Literal["membership.revoke"] = "membership.revoke"
    v: Literal[1] = 1
    entries: tuple[SignedRevocation, ...] = Field(max_length=MAX_REVOCATIONS)


class RevocationsRequest(Wire):
    kind: Literal["membership.revocations_get"] = "membership.revocations_get"
    v: Literal[1] = 1


P2P_MODELS: tuple[type[BaseModel], ...] = (RenewRequest, RenewAnswer, RevokeBroadcast, RevocationsRequest)


def _revocation_bytes(r: Revocation) -> bytes:
    return _REVOKE_DOMAIN + pack(r.model_dump())


def sign_revocation(key: NodeKey, cert: NodeCert, r: Revocation) -> SignedRevocation:
    return SignedRevocation(revocation=r, signer_cert=cert.to_bytes(), sig=key.sign(_revocation_bytes(r)))


def check_revocation(s: SignedRevocation, ca_public: bytes) -> Revocation:
    """The revocation if an admin whose cert was valid at `revoked_at` signed it.

    Raises:
        AuthError: FORBIDDEN (signer is not an admin), BAD_SIGNATURE, or the signer cert's reason.
    """
    cert = NodeCert.from_bytes(s.signer_cert)
    r = s.revocation
    verify_cert(cert, ca_public, float(r.revoked_at))
    if "admin" not in cert.roles or cert.node_id != r.by:
        raise AuthError(AuthReason.FORBIDDEN, "revocation: signer is not an admin")
    if not verify_signature(cert.public_key, _revocation_bytes(r), s.sig):
        raise AuthError(AuthReason.BAD_SIGNATURE, "revocation.sig: invalid")
    return r


def digest(subjects: list[str]) -> str:
    """Short digest of a revocation set, carried in SWIM meta `rv` (anti-entropy trigger)."""
    if not subjects:
        return "0"
    h = hashlib.sha256("\n".join(sorted(subjects)).encode()).hexdigest()[:12]
    return f"{len(subjects)}-{h}"


__all__ = [
    "MAX_REVOCATIONS",
    "P2P_MODELS",
    "JoinHello",
    "JoinHelloAnswer",
    "RenewAnswer",
    "RenewRequest",
    "RevocationsRequest",
    "RevokeBroadcast",
    "SignedRevocation",
    "check_revocation",
    "digest",
    "sign_revocation",
]
