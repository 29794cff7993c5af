"""The audit trail, sans-IO: entries, their keys (time order), retention and queries.

Every state-changing API request (POST, PUT, PATCH, DELETE) is one entry: who, their role, the node,
the action (method and route), the target (the path asked for), the result (HTTP status) and when.
Refused requests are entries too (401/403). The node keeps at most MAX_ENTRIES for at most
RETENTION_S in LMDB, and publishes its latest SUMMARY_ENTRIES to the `audit` registry table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, ValidationError

from federation.strict import Wire

MAX_ENTRIES = 20_000
RETENTION_S = 30 * 86400.0
SUMMARY_ENTRIES = 100
MAX_QUERY = 10_000
MAX_TARGET = 512


class AuditEntry(Wire):
    ts: float
    node: str = Field(max_length=128)
    user: str = Field(max_length=128)
    role: str = Field(max_length=32)
    via: str = Field(max_length=16)
    action: str = Field(max_length=600)
    target: str = Field(max_length=MAX_TARGET)
    result: int = Field(ge=100, le=599)


def entry_key(ts: float, seq: int) -> str:
    """Keys sort in time order: microseconds since the epoch, then a per-process sequence number."""
    return f"{int(ts * 1_000_000):017d}-{seq % 1_000_000:06d}"


def make_entry(*, ts: float, node: str, user: str, role: str, via: str, method: str, route: str, path: str,
               status: int) -> AuditEntry:
    target = path if len(path) <= MAX_TARGET else path[: MAX_TARGET - 1] + "…"
    return AuditEntry(ts=ts, node=node, user=user[:128], role=role, via=via, action=f"{method} {route}"[:600],
                      target=target, result=status)


def expired(keys: list[str], *, now: float, max_entries: int = MAX_ENTRIES,
            retention_s: float = RETENTION_S) -> list[str]:
    """Of `keys` (sorted, oldest first), those retention drops: older than retention_s, or past the count."""
    cutoff = entry_key(now - retention_s, 0)
    old = [k for k in keys if k < cutoff]
    rest = len(keys) - len(old)
    return old + keys[len(old): len(old) + max(0, rest - max_entries)]


def select(entries: Iterable[AuditEntry], *, since: float | None = None, user: str | None = None,
           limit: int = MAX_QUERY) -> list[AuditEntry]:
    """Newest first, those at or after `since` and by `user`, at most `limit`."""
    out = [e for e in entries if (since is None or e.ts >= since) and (user is None or e.user == user)]
    out.sort(key=lambda e: (e.ts, e.node), reverse=True)
    return out[:limit]


def summary_doc(node: str, latest: list[AuditEntry]) -> dict[str, Any]:
    """The `audit` registry record of a node: its latest entries."""
    return {"node": node, "entries": [e.model_dump() for e in latest[-SUMMARY_ENTRIES:]]}


def entries_of_summary(doc: dict[str, Any]) -> list[AuditEntry]:
    """A peer's summary back to entries; invalid ones are skipped (never trusted)."""
    out = []
    raw = doc.get("entries")
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(AuditEntry.model_validate(item))
        except ValidationError:
            continue
    return out


__all__ = ["MAX_ENTRIES", "RETENTION_S", "SUMMARY_ENTRIES", "AuditEntry", "entries_of_summary", "entry_key",
           "expired", "make_entry", "select", "summary_doc"]
