"""The component and block registries of this node: plain AIOS-shaped records in LMDB tables.

One small class per record kind with get/put/delete/list and change callbacks, so the
gossip-replicated registry can take its place later without touching callers. Records are
JSON-shaped dicts with the AIOS key names (a block record is `ResolvedBlock.to_record()` plus
the document it came from); nothing here validates specs (that is aiosd.specs').
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from storage import Store, Table

log = logging.getLogger(__name__)


class RecordKind(StrEnum):
    COMPONENT = "components"
    BLOCK = "blocks"


TABLES: dict[RecordKind, Table[Any]] = {
    RecordKind.COMPONENT: Table.msgpack("registry_components"),  # key: component URI
    RecordKind.BLOCK: Table.msgpack("registry_blocks"),  # key: block id
}

# (kind, key, record or None when deleted)
ChangeCallback = Callable[[RecordKind, str, dict[str, Any] | None], None]


class BlockCatalog:
    """`await reg.put(RecordKind.BLOCK, "b1", record)`; every change calls the subscribers."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._subscribers: list[ChangeCallback] = []

    def subscribe(self, cb: ChangeCallback) -> None:
        self._subscribers.append(cb)

    async def get(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        rec = await asyncio.to_thread(self._store.get, TABLES[kind], key)
        return rec if isinstance(rec, dict) else None

    async def list(self, kind: RecordKind) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(self._store.scan, TABLES[kind])
        return [r for _, r in rows if isinstance(r, dict)]

    async def put(self, kind: RecordKind, key: str, record: dict[str, Any]) -> None:
        await asyncio.to_thread(self._store.put, TABLES[kind], key, record)
        self._notify(kind, key, record)

    async def delete(self, kind: RecordKind, key: str) -> bool:
        gone = await asyncio.to_thread(self._store.delete, TABLES[kind], key)
        if gone:
            self._notify(kind, key, None)
        return bool(gone)

    def _notify(self, kind: RecordKind, key: str, record: dict[str, Any] | None) -> None:
        for cb in self._subscribers:
            try:
                cb(kind, key, record)
            except Exception:  # one subscriber's bug must not undo a committed change
                log.exception("registry subscriber failed", extra={"kind": kind.value, "key": key})


__all__ = ["TABLES", "BlockCatalog", "ChangeCallback", "RecordKind"]
