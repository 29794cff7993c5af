"""Policy, template, spec and governance records in the gossip-replicated registry.

`ReplicatedBook` has RecordBook's interface (get/all/len/subscribe/put/delete/load), so the
catalog, templates and governance do not know where records live. Records sit in a registry table
(under a key prefix when the table holds two kinds); a push on one node reaches every node, and
only admin certificates may write these tables (the registry enforces it on every node). The
in-memory index follows the registry's change stream, so a record pushed elsewhere is usable here
as soon as it has replicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from aiosd.policies.store import IndexedRecords
from aiosd.registry.service import RegistryService

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
# After the change stream is cut off (a watcher that fell behind), wait this long, re-list, re-watch.
_REWATCH_S = 0.5


class ReplicatedBook(IndexedRecords[M]):
    """Records of one kind in registry table `table` under key prefix `prefix`."""

    def __init__(self, registry: RegistryService, table: str, prefix: str, model: type[M], key: Callable[[M], str],
                 *, checked: bool = False) -> None:
        super().__init__()
        self._registry, self._table, self._prefix = registry, table, prefix
        self._model, self._key = model, key
        self._follow: asyncio.Task[None] | None = None
        if checked:  # the registry API refuses what this book would skip
            registry.check_with(table, prefix, self.check)

    def check(self, key: str, value: Any) -> None:
        """Raises ValueError (naming the field) unless `value` is a record of this kind stored under its own key."""
        try:
            rec = self._model.model_validate(value)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "value"
            raise ValueError(f"not a valid {self._model.__name__}: {where}: {err['msg']}") from None
        if self._key(rec) != key:
            raise ValueError(f"the key must be the record's own id {self._key(rec)!r}, not {key!r}")

    # ----- lifecycle -------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the table and follow its changes until `close()`."""
        await self._relist()
        if self._follow is None:
            self._follow = asyncio.create_task(self._follow_changes(), name=f"book:{self._table}/{self._prefix}")

    async def close(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None

    # ----- writes (reads: IndexedRecords) ---------------------------------------------------
    async def put(self, rec: M) -> None:
        """Raises: SpecError (too many records), WriteRefused (this node is not an admin), InvalidWrite."""
        key = self._key(rec)
        self._check_room(key, "the network")
        await self._registry.put(self._table, self._prefix + key, rec.model_dump(mode="json", by_alias=True))
        self._set(key, rec)

    async def delete(self, key: str) -> bool:
        gone = await self._registry.delete(self._table, self._prefix + key)
        self._set(key, None)
        return bool(gone)

    # ----- internals -------------------------------------------------------------------------
    def _parse(self, key: str, value: Any) -> M | None:
        try:
            return self._model.model_validate(value)
        except ValidationError:
            log.warning("replicated record skipped: not a valid record of this kind",
                        extra={"table": self._table, "key": key})
            return None

    async def _relist(self) -> None:
        seen: dict[str, M] = {}
        for e in await self._registry.scan(self._table):
            if e.key.startswith(self._prefix):
                key = e.key[len(self._prefix):]
                rec = self._parse(key, e.value)
                if rec is not None:
                    seen[key] = rec
        for key in set(self._index) - set(seen):
            self._set(key, None)
        for key, rec in seen.items():
            self._set(key, rec)

    async def _follow_changes(self) -> None:
        while True:
            try:
                async with self._registry.watch(frozenset({self._table})) as events:
                    await self._relist()  # what changed between the first listing and the watch
                    async for ev in events:
                        if not ev.entry.key.startswith(self._prefix):
                            continue
                        key = ev.entry.key[len(self._prefix):]
                        self._set(key, None if ev.op == "delete" else self._parse(key, ev.entry.value))
            except OverflowError:  # too many watchers on this node: retry later
                log.warning("registry watch refused; retrying", extra={"table": self._table})
            await asyncio.sleep(_REWATCH_S)  # the stream ended (fell behind or the registry stopped)


__all__ = ["ReplicatedBook"]
