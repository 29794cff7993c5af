"""Signed envelopes: seal() a typed body for the p2p wire; open_envelope() is the ONE check.

Wire: msgpack array [inner: bin, sig: bin(64)], inner = msgpack map
{v, kind, sender, cert: bin, ts, nonce, body, to?, re?}, sig = ed25519(sender key, DOMAIN + inner).
Checks run cheapest first: size, decode, version, kind, cert (chain, validity, revocation),
sender, recipient, ts skew, signature, nonce, body schema. Authorisation (may this sender do
this) is the caller's, after this. No IO here; EnvelopeVerifier adds counters and quiet logs.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, OrderedDict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from pydantic import BaseModel, ValidationError

from federation.certs import MSGPACK_ERRORS, CertCache, NodeCert, first_error, pack, verify_cert
from federation.errors import AuthError, AuthReason
from federation.identity import NodeKey, verify_signature
from federation.replay import ReplayCache
from federation.sansio import NodeId

log = logging.getLogger(__name__)

ENVELOPE_V = 1
_DOMAIN = b"aiosd-env-v1\x00"
# 1 MiB: control-plane messages are small; bulk data (activations, blobs) goes over the data
# plane in chunks (ARCHITECTURE §10), so anything larger on this channel is a mistake or abuse.
DEFAULT_MAX_BYTES = 1 << 20
# 30 s: NTP keeps LAN clocks within ms; 30 s tolerates a VM that just resumed, and bounds how
# long the replay cache must remember a nonce.
DEFAULT_MAX_SKEW_S = 30.0
_MAX_KIND_LEN = 64
_INNER_KEYS = frozenset({"v", "kind", "sender", "cert", "ts", "nonce", "body", "to", "re"})
_REQUIRED_KEYS = frozenset({"v", "kind", "sender", "cert", "ts", "nonce", "body"})

Schemas = Mapping[str, type[BaseModel]]


def schemas_of(models: Iterable[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """A kind → model registry from wire models whose `kind` field has a default."""
    out: dict[str, type[BaseModel]] = {}
    for m in models:
        field = m.model_fields.get("kind")
        kind = field.default if field is not None else None
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"{m.__name__}.kind: needs a string default to be registered")
        if kind in out and out[kind] is not m:
            raise ValueError(f"{m.__name__}.kind: {kind!r} is already registered")
        out[kind] = m
    return out


@dataclass(frozen=True, slots=True)
class Verified:
    """An envelope that passed every check; `body` is an instance of the kind's model."""

    kind: str
    sender: NodeId
    cert: NodeCert
    body: BaseModel
    ts: float
    nonce: bytes
    to: NodeId | None = None
    re: bytes | None = None  # nonce of the request this envelope answers


def seal(
    key: NodeKey,
    cert: NodeCert,
    kind: str,
    body: BaseModel,
    now: float,
    *,
    to: NodeId | None = None,
    re: bytes | None = None,
    nonce: bytes | None = None,
    cert_bytes: bytes | None = None,
) -> bytes:
    """Sign `body` as message `kind` from `key` (whose cert is `cert`), optionally for one node.

    `to` binds the message to one recipient; `re` binds an answer to the request's nonce.
    `cert_bytes` (cert.to_bytes(), cached by the caller) saves re-encoding the cert per message.
    """
    if cert.public_key != key.public_bytes:
        raise ValueError("cert: does not belong to this key")
    inner: dict[str, Any] = {
        "v": ENVELOPE_V,
        "kind": kind,
        "sender": cert.node_id,
        "cert": cert_bytes if cert_bytes is not None else cert.to_bytes(),
        "ts": float(now),
        "nonce": nonce if nonce is not None else os.urandom(16),
        "body": body.model_dump(),
    }
    if to is not None:
        inner["to"] = to
    if re is not None:
        inner["re"] = re
    inner_b = pack(inner)
    return pack([inner_b, key.sign(_DOMAIN + inner_b)])


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=True)


def open_envelope(
    raw: bytes,
    *,
    ca_public: bytes,
    now: float,
    revoked: Container[str],
    replay_cache: ReplayCache | None,
    schemas: Schemas,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    cert_cache: CertCache | None = None,
    me: NodeId | None = None,
) -> Verified:
    """Verify one envelope and decode its body; nothing outside `replay_cache` changes.

    `replay_cache=None` skips the nonce check (only for answers on a connection we opened,
    where the ts check and the request's binding suffice); `me` enables the recipient check.

    Raises:
        AuthError: every rejection, with its AuthReason; nothing else escapes.
    """
    if len(raw) > max_bytes:
        raise AuthError(AuthReason.TOO_LARGE, f"envelope: {len(raw)} > {max_bytes} bytes")
    try:
        outer = _unpack(raw)
    except MSGPACK_ERRORS:
        raise AuthError(AuthReason.MALFORMED, "envelope: not msgpack") from None
    if (
        not isinstance(outer, tuple)
        or len(outer) != 2
        or not isinstance(outer[0], bytes)
        or not isinstance(outer[1], bytes)
    ):
        raise AuthError(AuthReason.MALFORMED, "envelope: not [inner, sig]")
    inner_b, sig = outer
    try:
        inner = _unpack(inner_b)
    except MSGPACK_ERRORS:
        raise AuthError(AuthReason.MALFORMED, "envelope.inner: not msgpack") from None
    if not isinstance(inner, dict):
        raise AuthError(AuthReason.MALFORMED, "envelope.inner: not a map")
    if inner.get("v") != ENVELOPE_V:
        raise AuthError(AuthReason.UNSUPPORTED_VERSION, f"envelope.v: {inner.get('v')!r}")
    if not _INNER_KEYS.issuperset(inner.keys()) or not _REQUIRED_KEYS.issubset(inner.keys()):
        raise AuthError(AuthReason.MALFORMED, "envelope: unexpected or missing fields")
    kind, sender, cert_b, ts, nonce, to = (
        inner["kind"],
        inner["sender"],
        inner["cert"],
        inner["ts"],
        inner["nonce"],
        inner.get("to"),
    )
    re = inner.get("re")
    if not isinstance(kind, str) or not 0 < len(kind) <= _MAX_KIND_LEN:
        raise AuthError(AuthReason.MALFORMED, "envelope.kind: not a short string")
    if not isinstance(sender, str) or not isinstance(cert_b, bytes):
        raise AuthError(AuthReason.MALFORMED, "envelope.sender/cert: wrong type")
    if not isinstance(ts, float) or math.isnan(ts):  # refuse NaN here, by name
        raise AuthError(AuthReason.MALFORMED, "envelope.ts: not a float")
    if not isinstance(nonce, bytes) or not 16 <= len(nonce) <= 32:
        raise AuthError(AuthReason.MALFORMED, "envelope.nonce: must be 16..32 bytes")
    if to is not None and not isinstance(to, str):
        raise AuthError(AuthReason.MALFORMED, "envelope.to: not a string")
    if re is not None and (not isinstance(re, bytes) or len(re) > 32):
        raise AuthError(AuthReason.MALFORMED, "envelope.re: not a nonce")
    model = schemas.get(kind)
    if model is None:
        raise AuthError(AuthReason.UNKNOWN_KIND, f"envelope.kind: {kind[:_MAX_KIND_LEN]!r}")
    if cert_cache is not None:
        cert = cert_cache.verify(cert_b, now, revoked)
    else:
        cert = NodeCert.from_bytes(cert_b)
        verify_cert(cert, ca_public, now, revoked)
    if sender != cert.node_id:
        raise AuthError(AuthReason.SENDER_MISMATCH, "envelope.sender: differs from cert.node_id")
    if me is not None and to is not None and to != me:
        raise AuthError(AuthReason.WRONG_RECIPIENT, "envelope.to: not this node")
    if abs(now - ts) > max_skew_s:
        raise AuthError(AuthReason.STALE_TS, f"envelope.ts: off by {now - ts:.1f}s")
    if not verify_signature(cert.public_key, _DOMAIN + inner_b, sig):
        raise AuthError(AuthReason.BAD_SIGNATURE, "envelope.sig: invalid")
    if replay_cache is not None and not replay_cache.check_and_add(nonce, ts, now):
        raise AuthError(AuthReason.REPLAY, "envelope.nonce: seen before")
    try:
        body = model.model_validate(inner["body"])
    except ValidationError as e:
        raise AuthError(AuthReason.BAD_BODY, "body." + first_error(e)) from None
    return Verified(
        kind=kind,
        sender=NodeId(sender),
        cert=cert,
        body=body,
        ts=ts,
        nonce=nonce,
        to=None if to is None else NodeId(to),
        re=re,
    )


class QuietLog:
    """Logs each (reason, source) warning at most once per `every_s` (bounded, FIFO eviction)."""

    def __init__(self, every_s: float = 60.0, max_keys: int = 1024) -> None:
        # 1024 keys: peers choose the sources, so the map is capped and evicts the oldest.
        self.every_s = every_s
        self.max_keys = max_keys
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.suppressed = 0

    def should_log(self, reason: str, source: str, now: float) -> bool:
        key = (reason, source)
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self.suppressed += 1
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        if len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True


class EnvelopeVerifier:
    """open_envelope with this node's settings, a cert cache, a replay cache, counters and quiet logs."""

    def __init__(
        self,
        ca_public: bytes,
        schemas: Schemas,
        *,
        revoked: Container[str] = frozenset(),
        me: NodeId | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        replay_entries: int = 100_000,
    ) -> None:
        self.ca_public = ca_public
        self.schemas = schemas
        self.revoked = revoked
        self.me = me
        self.max_bytes = max_bytes
        self.max_skew_s = max_skew_s
        self.replay = ReplayCache(max_skew_s=max_skew_s, max_entries=replay_entries)
        self.certs = CertCache(ca_public)
        self.accepted = 0
        self.rejected: Counter[AuthReason] = Counter()
        self.quiet = QuietLog()

    def open(self, raw: bytes, now: float, *, source: str = "", check_replay: bool = True) -> Verified:
        """Verify `raw` (from `source`, an address for logs); count and quietly log rejections.

        Raises:
            AuthError: as open_envelope.
        """
        try:
            v = open_envelope(
                raw,
                ca_public=self.ca_public,
                now=now,
                revoked=self.revoked,
                replay_cache=self.replay if check_replay else None,
                schemas=self.schemas,
                max_bytes=self.max_bytes,
                max_skew_s=self.max_skew_s,
                cert_cache=self.certs,
                me=self.me,
            )
        except AuthError as e:
            self.rejected[e.reason] += 1
            if self.quiet.should_log(e.reason.value, source, now):
                log.warning(
                    "envelope rejected",
                    extra={"reason": e.reason.value, "source": source, "detail": e.detail},
                )
            raise
        self.accepted += 1
        return v

    def metrics(self) -> dict[str, int]:
        """Counters for /metrics: accepted, rejected_<reason>, replay floor raises, log suppressions."""
        out = {"envelopes_accepted": self.accepted}
        for reason in AuthReason:
            out[f"envelopes_rejected_{reason.value}"] = self.rejected[reason]
        out["replay_floor_raises"] = self.replay.floor_raises
        out["reject_logs_suppressed"] = self.quiet.suppressed
        return out


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SKEW_S",
    "ENVELOPE_V",
    "EnvelopeVerifier",
    "QuietLog",
    "Schemas",
    "Verified",
    "open_envelope",
    "schemas_of",
    "seal",
]
