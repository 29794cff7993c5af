"""Last-writer-wins merge: one total order on records, so every delivery order agrees.

Order: (hlc, origin, tombstone, value) compared left to right. Versions of one origin are
unique in normal operation (its HLC is strictly increasing); the later keys only break ties
that a restarted node with a clock set backwards could cause: then the tombstone wins over a
live value (a delete is never undone by a same-version write), and between two live values
the larger value bytes win. Because the order is total and merge keeps the maximum, merge is
commutative, associative and idempotent (a join-semilattice), whatever the delivery order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class _VersionLike(Protocol):
    @property
    def hlc(self) -> int: ...

    @property
    def origin(self) -> str: ...


class _RecordLike(Protocol):
    @property
    def version(self) -> _VersionLike: ...

    @property
    def tombstone(self) -> bool: ...

    @property
    def value(self) -> bytes: ...


OrderKey = tuple[int, str, bool, bytes]
R = TypeVar("R", bound=_RecordLike)


def order_key(r: _RecordLike) -> OrderKey:
    """The record's position in the LWW total order (bigger wins)."""
    v = r.version
    return (v.hlc, v.origin, r.tombstone, r.value)


def supersedes(new: _RecordLike, old: _RecordLike | None) -> bool:
    """True when `new` must replace `old` (strictly later in the order, or nothing stored)."""
    return old is None or order_key(new) > order_key(old)


def winner(records: Iterable[R]) -> R:
    """The record that merge keeps out of `records` (any order).

    Raises:
        ValueError: `records` is empty.
    """
    return max(records, key=order_key)


__all__ = ["OrderKey", "order_key", "supersedes", "winner"]
