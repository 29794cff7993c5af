"""Errors and rejection reasons of the replication core.

    FederationError                    (federation/errors.py)
    └── ReplicationError               base of what replication raises to its own callers
        ├── InvalidWrite               a local write is malformed (also a ValueError); names the field
        ├── WriteRefused               this node has no authority for the table (also a PermissionError)
        └── ClockDriftError            a remote HLC is further ahead than the allowed drift

"Peer did wrong" never raises out of the core: a bad record from a peer is counted under a
`RejectReason`, logged once per reason, and dropped (never stored, never forwarded).
"""

from __future__ import annotations

from enum import StrEnum

from federation.errors import FederationError


class ReplicationError(FederationError):
    """Base of replication errors; `str()` is one clear sentence."""


class InvalidWrite(ReplicationError, ValueError):
    """A local write was refused before anything changed; the message names the field."""


class WriteRefused(ReplicationError, PermissionError):
    """This node may not write the table (authority rules); nothing changed."""


class ClockDriftError(ReplicationError):
    """A remote hybrid-logical-clock value is ahead of our wall clock by more than the bound."""


class RejectReason(StrEnum):
    """Why an incoming record or message was dropped (closed set; metric label)."""

    BAD_SIGNATURE = "bad_signature"  # origin's signature does not verify (incl. forged origin)
    NO_AUTHORITY = "no_authority"  # origin may not write this table/key (or unknown table)
    CLOCK_DRIFT = "clock_drift"  # HLC too far in the future
    MALFORMED = "malformed"  # structurally wrong (tombstone with value, bad bucket list, ...)
    TOO_LARGE = "too_large"  # value or message over the configured caps


__all__ = ["ClockDriftError", "InvalidWrite", "RejectReason", "ReplicationError", "WriteRefused"]
