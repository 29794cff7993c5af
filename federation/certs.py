"""Node certificates: the network CA binds a node's public key to its network, cluster and roles.

issue_cert / verify_cert / needs_renewal are pure (time comes in as `now`); CertCache skips the
CA-signature check for certificate bytes already verified. Revocation *distribution* is not here
(the registries replicate it); this module only checks a cert against a revoked set.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Container, Iterable, Iterator
from typing import Annotated, Any, Literal, Self

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from pydantic import Field, ValidationError, model_validator

from federation.errors import AuthError, AuthReason, IdentityError
from federation.identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    CaKey,
    network_id_of,
    node_id_of,
    verify_signature,
    write_file_atomic,
)
from federation.strict import Wire

Role = Literal["admin", "member"]
"""admin: may create tokens, admit joiners, revoke; member: an ordinary node. Append-only."""

# Issued certs are backdated so a joiner whose clock is a little behind the CA can use its cert
# at once (Let's Encrypt backdates for the same reason). 5 min covers NTP-less VMs after boot.
BACKDATE_S = 300
# Longest ttl the CA signs: renewal runs at 2/3 of life, so a year keeps a node that was off for
# months valid; revocation, not expiry, is how a node is removed.
MAX_TTL_S = 366 * 24 * 3600
_CERT_DOMAIN = b"aiosd-cert-v1\x00"
# A cert is ~250 B; anything much bigger is not a cert (checked before decoding).
MAX_CERT_BYTES = 2048

_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


class NodeCert(Wire):
    """A node certificate; immutable; `ca_signature` covers every other field."""

    kind: Literal["aiosd.cert"] = "aiosd.cert"
    v: Literal[1] = 1
    node_id: _Id
    public_key: Annotated[bytes, Field(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)]
    network_id: _Id
    cluster: _Id
    roles: tuple[Role, ...] = Field(min_length=1, max_length=8)
    not_before: int = Field(ge=0)
    expires: int = Field(ge=0)
    serial: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
    ca_signature: Annotated[bytes, Field(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.node_id != node_id_of(self.public_key):
            raise ValueError("node_id: does not match the hash of public_key")
        if self.expires <= self.not_before:
            raise ValueError("expires: must be after not_before")
        return self

    def signed_bytes(self) -> bytes:
        """The exact bytes the CA signs (domain-separated, field order fixed)."""
        return _signed_bytes(
            self.node_id,
            self.public_key,
            self.network_id,
            self.cluster,
            self.roles,
            self.not_before,
            self.expires,
            self.serial,
        )

    def to_bytes(self) -> bytes:
        """msgpack encoding (a map; what envelopes carry and cert files hold)."""
        return pack(self.model_dump())

    @classmethod
    def from_bytes(cls, raw: bytes) -> NodeCert:
        """Decode a cert (does NOT verify the CA signature; see verify_cert).

        Raises:
            AuthError(MALFORMED): not a well-formed certificate; the detail names the field.
        """
        if len(raw) > MAX_CERT_BYTES:
            raise AuthError(AuthReason.MALFORMED, f"cert: larger than {MAX_CERT_BYTES} bytes")
        try:
            obj = msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=True)
        except MSGPACK_ERRORS:
            raise AuthError(AuthReason.MALFORMED, "cert: not msgpack") from None
        return cls.from_obj(obj)

    @classmethod
    def from_obj(cls, obj: Any) -> NodeCert:
        """Validate an already-unpacked cert map (as carried inside an envelope)."""
        try:
            return cls.model_validate(obj)
        except ValidationError as e:
            raise AuthError(AuthReason.MALFORMED, "cert." + first_error(e)) from None


# What msgpack.unpackb raises on hostile input: ValueError covers ExtraData, FormatError,
# StackError and bad map keys; UnpackException covers OutOfData; TypeError unhashable keys.
MSGPACK_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, msgpack.UnpackException)


def pack(obj: object) -> bytes:
    """msgpack with bin type for bytes (the one encoding of every aiosd wire object)."""
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def first_error(e: ValidationError) -> str:
    """'field.path: message' of a pydantic error (the first one; enough to act on)."""
    err = e.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(root)"
    return f"{loc}: {err['msg']}"


def _signed_bytes(
    node_id: str,
    public_key: bytes,
    network_id: str,
    cluster: str,
    roles: tuple[str, ...],
    not_before: int,
    expires: int,
    serial: str,
) -> bytes:
    body = [1, node_id, public_key, network_id, cluster, list(roles), not_before, expires, serial]
    return _CERT_DOMAIN + pack(body)


def issue_cert(
    ca: CaKey,
    node_public: bytes,
    *,
    network_id: str,
    cluster: str,
    roles: Iterable[Role],
    ttl_s: int,
    now: float,
    serial: str | None = None,
) -> NodeCert:
    """Sign a certificate for `node_public`, valid from now - BACKDATE_S for `ttl_s` seconds.

    Raises:
        ValueError: a bad argument (wrong network for this CA, ttl out of range, bad key...).
    """
    if network_id != ca.network_id:
        raise ValueError("network_id: does not belong to this CA")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s: must be in 1..{MAX_TTL_S}")
    if len(node_public) != PUBLIC_KEY_BYTES:
        raise ValueError(f"node_public: must be {PUBLIC_KEY_BYTES} bytes")
    role_t = tuple(dict.fromkeys(roles))
    serial = serial if serial is not None else os.urandom(12).hex()
    nb = max(0, int(now) - BACKDATE_S)
    exp = int(now) + ttl_s
    nid = node_id_of(node_public)
    sig = ca.sign(_signed_bytes(nid, node_public, network_id, cluster, role_t, nb, exp, serial))
    try:
        return NodeCert(
            node_id=nid,
            public_key=node_public,
            network_id=network_id,
            cluster=cluster,
            roles=role_t,
            not_before=nb,
            expires=exp,
            serial=serial,
            ca_signature=sig,
        )
    except ValidationError as e:
        raise ValueError(first_error(e)) from None


def verify_cert(cert: NodeCert, ca_public: bytes, now: float, revoked: Container[str] = frozenset()) -> None:
    """Check the CA signature, the validity window and revocation (by node id or serial).

    Raises:
        AuthError: UNKNOWN_CA (another network), BAD_CERT_SIGNATURE, CERT_NOT_YET_VALID,
            EXPIRED_CERT, REVOKED.
    """
    if cert.network_id != network_id_of(ca_public):
        raise AuthError(AuthReason.UNKNOWN_CA, "cert.network_id: not this network")
    if not verify_signature(ca_public, cert.signed_bytes(), cert.ca_signature):
        raise AuthError(AuthReason.BAD_CERT_SIGNATURE, "cert.ca_signature: not signed by the network CA")
    check_cert_state(cert, now, revoked)


def check_cert_state(cert: NodeCert, now: float, revoked: Container[str]) -> None:
    """The time and revocation checks of verify_cert (cheap; re-run on every message)."""
    if now < cert.not_before:
        raise AuthError(AuthReason.CERT_NOT_YET_VALID, "cert.not_before: in the future")
    if now >= cert.expires:
        raise AuthError(AuthReason.EXPIRED_CERT, "cert.expires: in the past")
    if cert.node_id in revoked or cert.serial in revoked:
        raise AuthError(AuthReason.REVOKED, "cert: node or serial is revoked")


def needs_renewal(cert: NodeCert, now: float, fraction: float = 2 / 3) -> bool:
    """True once `fraction` of the cert's lifetime has passed (renew early; never lapse)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction: must be in (0, 1]")
    return now >= cert.not_before + fraction * (cert.expires - cert.not_before)


class CertCache:
    """Remembers cert bytes whose CA signature was verified (bounded LRU).

    Skips one ed25519 verify per message from a known peer; expiry and revocation are still
    checked on every use. Keys are the exact bytes, so a changed cert is verified afresh.
    """

    def __init__(self, ca_public: bytes, max_entries: int = 4096) -> None:
        # 4096 > any network we target (hundreds of nodes x a renewal overlap); an attacker with
        # valid certs can only churn the cache, costing a verify, never a wrong answer.
        self.ca_public = ca_public
        self.max_entries = max_entries
        self._d: OrderedDict[bytes, NodeCert] = OrderedDict()
        self.evictions = 0

    def verify(self, raw: bytes, now: float, revoked: Container[str]) -> NodeCert:
        """The verified NodeCert encoded as `raw`; raises AuthError like from_bytes + verify_cert."""
        cert = self._d.get(raw)
        if cert is None:
            cert = NodeCert.from_bytes(raw)
            verify_cert(cert, self.ca_public, now, revoked)
            self._d[raw] = cert
            if len(self._d) > self.max_entries:
                self._d.popitem(last=False)
                self.evictions += 1
            return cert
        self._d.move_to_end(raw)
        check_cert_state(cert, now, revoked)
        return cert

    def __len__(self) -> int:
        return len(self._d)


class Revocation(Wire):
    """One revoked subject (a node id, a cert serial or a token id), as the registries store it."""

    kind: Literal["aiosd.revocation"] = "aiosd.revocation"
    v: Literal[1] = 1
    subject: _Id
    subject_kind: Literal["node", "cert", "token"]
    revoked_at: int = Field(ge=0)
    by: _Id
    reason: str = Field(default="", max_length=200)


class RevocationSet(Container[str]):
    """The revoked subjects as a set (what verify_cert / admit take as `revoked`)."""

    def __init__(self, entries: Iterable[Revocation] = ()) -> None:
        self._subjects: dict[str, Revocation] = {}
        for e in entries:
            self.add(e)

    def add(self, entry: Revocation) -> None:
        self._subjects.setdefault(entry.subject, entry)

    def __contains__(self, subject: object) -> bool:
        return subject in self._subjects

    def __iter__(self) -> Iterator[Revocation]:
        return iter(self._subjects.values())

    def __len__(self) -> int:
        return len(self._subjects)


def save_cert(path: str | os.PathLike[str], cert: NodeCert, *, force: bool = True) -> None:
    """Write a cert file atomically (mode 0644: a cert is public). Replaces by default (renewal)."""
    write_file_atomic(path, cert.to_bytes(), mode=0o644, force=force, what="certificate")


def load_cert(path: str | os.PathLike[str]) -> NodeCert:
    """Read a cert file written by save_cert.

    Raises:
        IdentityError: missing or corrupt file (the message names the file).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CERT_BYTES + 1)
    except FileNotFoundError:
        raise IdentityError(f"certificate {path} does not exist (run `aiosd init` or `aiosd join`)") from None
    except OSError as e:
        raise IdentityError(f"certificate {path} cannot be read: {e.strerror}") from e
    try:
        return NodeCert.from_bytes(raw)
    except AuthError as e:
        raise IdentityError(f"certificate {path} is corrupt: {e.detail}") from None


__all__ = [
    "BACKDATE_S",
    "MAX_CERT_BYTES",
    "MAX_TTL_S",
    "MSGPACK_ERRORS",
    "CertCache",
    "NodeCert",
    "Revocation",
    "RevocationSet",
    "Role",
    "check_cert_state",
    "first_error",
    "issue_cert",
    "load_cert",
    "needs_renewal",
    "pack",
    "save_cert",
    "verify_cert",
]
