"""Transmit-limited broadcast queue: each update is piggybacked a bounded number of times.

One pending update per member (a newer one replaces the older; memberlist TransmitLimitedQueue
invalidation). Fewest-sent first, newest first among equals, so fresh news (a refutation) leaves first.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.membership.messages import Alive, Dead, Suspect
from federation.sansio import NodeId


@dataclass(slots=True)
class _Item:
    update: Alive | Suspect | Dead
    transmits: int
    order: int


class BroadcastQueue:
    """Bounded: past `cap` pending updates, the most-sent (then oldest) one is dropped and counted."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._items: dict[NodeId, _Item] = {}
        self._order = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, update: Alive | Suspect | Dead) -> None:
        """Queue `update`, replacing any pending update about the same member."""
        self._order += 1
        self._items[update.node] = _Item(update, 0, self._order)
        if len(self._items) > self._cap:
            victim = max(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].order))[0]
            del self._items[victim]
            self.dropped += 1

    def pending(self, node: NodeId) -> Alive | Suspect | Dead | None:
        item = self._items.get(node)
        return None if item is None else item.update

    def take(self, limit: int, retransmit_limit: int) -> list[Alive | Suspect | Dead]:
        """Up to `limit` updates to piggyback now; each counts one transmit."""
        if limit <= 0 or not self._items:
            return []
        chosen = sorted(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].order))[:limit]
        out: list[Alive | Suspect | Dead] = []
        for node, item in chosen:
            out.append(item.update)
            item.transmits += 1
            if item.transmits >= retransmit_limit:
                del self._items[node]
        return out


__all__ = ["BroadcastQueue"]
