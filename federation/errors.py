"""Errors of the federation package (trust, p2p edge, membership, replication, consensus).

    FederationError                     base of everything raised by federation/
    ├── IdentityError                   a key or certificate file is missing, corrupt or too open
    │   └── AlreadyExistsError          save() would overwrite an existing key without force=True
    ├── AuthError(reason)               a peer message / certificate failed a check (AuthReason)
    ├── SessionError(reason)            a session handshake or frame was refused (SessionReason)
    ├── TokenError(reason)              a join token was refused or is unparseable (TokenReason)
    ├── RemoteProtocolError             a peer answered with something that is not a valid answer
    │   └── RemoteRejected              the peer verified our request and refused it (status + reason)
    └── PeerUnreachable                 no answer within the deadline / connection refused
                                        (also a ConnectionError)
"Peer did wrong" is AuthError / RemoteProtocolError at the edge (count, log once, drop);
"we did wrong" is a plain ValueError/TypeError from our own call sites.
"""

from __future__ import annotations

from enum import StrEnum


class FederationError(Exception):
    """Base of federation errors; `str()` is one clear sentence."""


class IdentityError(FederationError):
    """A key or certificate file cannot be used (missing, corrupt, wrong kind, too open)."""


class AlreadyExistsError(IdentityError, FileExistsError):
    """Refused to overwrite an existing key file (pass force=True to replace it)."""


class AuthReason(StrEnum):
    """Why a certificate or an envelope was rejected (closed set; metric label)."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KIND = "unknown_kind"
    BAD_SIGNATURE = "bad_signature"
    BAD_CERT_SIGNATURE = "bad_cert_signature"
    UNKNOWN_CA = "unknown_ca"
    CERT_NOT_YET_VALID = "cert_not_yet_valid"
    EXPIRED_CERT = "expired_cert"
    REVOKED = "revoked"
    SENDER_MISMATCH = "sender_mismatch"
    WRONG_RECIPIENT = "wrong_recipient"
    STALE_TS = "stale_ts"
    REPLAY = "replay"
    BAD_BODY = "bad_body"
    FORBIDDEN = "forbidden"


class AuthError(FederationError):
    """A peer's certificate or message failed verification; `reason` says which check."""

    def __init__(self, reason: AuthReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class SessionReason(StrEnum):
    """Why a session handshake failed or a frame was dropped (closed set; metric label).

    A handshake failure that is a certificate check keeps the AuthReason value (unknown_ca,
    revoked, expired_cert, ...), so one label means one thing on both the old and new wire.
    """

    TOO_LARGE = "too_large"  # over the size cap (checked before anything is allocated)
    TRUNCATED = "truncated"  # shorter than a header + tag
    MALFORMED = "malformed"  # not the expected layout (after decryption for payloads)
    BAD_VERSION = "bad_version"  # unknown protocol magic / message version
    BAD_KEY = "bad_key"  # an ephemeral key that gives an all-zero shared secret
    BAD_TAG = "bad_tag"  # AEAD authentication failed: altered, or a frame of another session
    BAD_SIGNATURE = "bad_signature"  # the peer's transcript signature is wrong
    REPLAY = "replay"  # counter not above the last accepted one (or an old epoch)
    OUT_OF_ORDER = "out_of_order"  # counter skipped ahead on an ordered stream
    BAD_EPOCH = "bad_epoch"  # a key epoch the session cannot be at
    STALE_KEY = "stale_key"  # the peer did not rekey in time
    WRONG_PEER = "wrong_peer"  # the peer is not the node the caller asked for
    CA_MISMATCH = "ca_mismatch"  # (join) the seed's CA is not the one pinned in the token
    ANONYMOUS = "anonymous"  # an anonymous (join) session sent a member message
    PEER_CERT = "peer_cert"  # the peer's cert expired or was revoked during the session
    TIMEOUT = "timeout"  # the handshake did not finish in time
    RATE_LIMITED = "rate_limited"  # too many handshakes from one source
    BUSY = "busy"  # too many handshakes in progress
    UNEXPECTED = "unexpected"  # a message in the wrong handshake state


class SessionError(FederationError):
    """A session handshake or frame was refused; `reason` says which check (or the cert's AuthReason)."""

    def __init__(self, reason: SessionReason | AuthReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class TokenReason(StrEnum):
    """Why a join token was refused (closed set; shown to the joining user)."""

    MALFORMED = "malformed"
    EXPIRED = "expired"
    USED_UP = "used_up"
    WRONG_SECRET = "wrong_secret"
    REVOKED = "revoked"
    CA_MISMATCH = "ca_mismatch"
    UNKNOWN_TOKEN = "unknown_token"
    NETWORK_MISMATCH = "network_mismatch"


_TOKEN_HINTS: dict[TokenReason, str] = {
    TokenReason.MALFORMED: "the join token is not a valid aiosd token (copy it again in full)",
    TokenReason.EXPIRED: "the join token has expired; ask an admin for a new one (aiosd token create)",
    TokenReason.USED_UP: "the join token has no uses left; ask an admin for a new one",
    TokenReason.WRONG_SECRET: "the join token's secret is wrong (was it edited or truncated?)",
    TokenReason.REVOKED: "the join token was revoked by an admin",
    TokenReason.CA_MISMATCH: "the seed's network CA does not match the fingerprint pinned in the token",
    TokenReason.UNKNOWN_TOKEN: "the seed does not know this token id (wrong network, or not replicated yet)",
    TokenReason.NETWORK_MISMATCH: "the token belongs to another network",
}


class TokenError(FederationError):
    """A join token was refused; `str()` is a sentence for the user, `reason` the machine code."""

    def __init__(self, reason: TokenReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        hint = _TOKEN_HINTS[reason]
        super().__init__(f"{hint} ({detail})" if detail else hint)


class RemoteProtocolError(FederationError):
    """The peer's answer could not be used (bad status, unverifiable envelope, wrong kind)."""


class RemoteRejected(RemoteProtocolError):
    """The peer answered with an error status for our request (e.g. 403 forbidden, 503 busy)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"peer refused the request: HTTP {status} {reason}")


class PeerUnreachable(FederationError, ConnectionError):
    """No answer from the peer within the deadline (refused, reset, timed out, dropped)."""

    def __init__(self, addr: str, detail: str = "") -> None:
        self.addr = addr
        super().__init__(f"peer {addr} unreachable: {detail}" if detail else f"peer {addr} unreachable")


__all__ = [
    "AlreadyExistsError",
    "AuthError",
    "AuthReason",
    "FederationError",
    "IdentityError",
    "PeerUnreachable",
    "RemoteProtocolError",
    "RemoteRejected",
    "SessionError",
    "SessionReason",
    "TokenError",
    "TokenReason",
]
