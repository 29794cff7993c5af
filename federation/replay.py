"""Bounded replay cache: remembers envelope nonces for as long as their timestamp is acceptable.

Sound under memory pressure: when full, the entry with the oldest ts is evicted and the floor
rises to its ts, so any message at or below the floor is refused. The window narrows under a
flood, it never reopens for a replay. Sans-IO: `now` comes in.
"""

from __future__ import annotations

import heapq


class ReplayCache:
    """Nonces seen within the acceptance window `[now - max_skew_s, now + max_skew_s]`."""

    def __init__(self, max_skew_s: float = 30.0, max_entries: int = 100_000) -> None:
        # 100k x ~150 B = ~15 MB. At 8,000 msgs/s and 30 s skew the window would need 480k; past
        # the cap the floor rises (12 s of history at that rate), which honest peers with
        # NTP-synced clocks never notice.
        if max_skew_s <= 0 or max_entries < 1:
            raise ValueError("max_skew_s and max_entries: must be positive")
        self.max_skew_s = max_skew_s
        self.max_entries = max_entries
        self._heap: list[tuple[float, bytes]] = []
        self._seen: set[bytes] = set()
        self.floor = float("-inf")
        self.floor_raises = 0

    def check_and_add(self, nonce: bytes, ts: float, now: float) -> bool:
        """Record `nonce`; False when it was seen before or its ts is at/below the floor.

        The caller has already refused ts outside the skew window (that is `stale_ts`).
        """
        self._expire(now)
        if ts <= self.floor or nonce in self._seen:
            return False
        self._seen.add(nonce)
        heapq.heappush(self._heap, (ts, nonce))
        while len(self._heap) > self.max_entries:
            old_ts, old = heapq.heappop(self._heap)
            self._seen.discard(old)
            self.floor = max(self.floor, old_ts)
            self.floor_raises += 1
        return True

    def _expire(self, now: float) -> None:
        # Entries whose ts has left the window can go: such a replay is refused as stale anyway.
        limit = now - self.max_skew_s
        heap = self._heap
        while heap and heap[0][0] < limit:
            old_ts, old = heapq.heappop(heap)
            self._seen.discard(old)
            # Raise the floor too: if the wall clock steps back, the forgotten nonce stays refused.
            self.floor = max(self.floor, old_ts)

    def __len__(self) -> int:
        return len(self._heap)


__all__ = ["ReplayCache"]
