"""Large payloads by reference (AIOS FrameDB's role, without a FrameDB).

A stage (or the entry) whose packet is larger than REF_THRESHOLD keeps the bytes here and sends a
`PayloadRef` (sha256, size, holder) instead; the next stage fetches them from the holder over the
p2p raw channel (`vdag.fetch`) and checks size and digest before using them. The store is bounded
(bytes and entries) and entries expire after REF_TTL_S, so a reference is a short-lived promise:
a stage that fetches too late gets a clear "does not exist" error. Pure: time is passed in.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

REF_THRESHOLD = 256 << 10  # packets above this travel by reference
REF_TTL_S = 60.0
MAX_STORE_BYTES = 512 << 20
MAX_REF_BYTES = 64 << 20  # one payload


class RefStore:
    def __init__(self, max_bytes: int = MAX_STORE_BYTES, ttl_s: float = REF_TTL_S) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.size = 0
        self.evicted = 0
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def put(self, data: bytes, now: float) -> str:
        """Keep `data`; returns its sha256 (hex). Expired and oldest entries make room."""
        digest = hashlib.sha256(data).hexdigest()
        self._expire(now)
        old = self._items.pop(digest, None)
        if old is not None:
            self.size -= len(old[0])
        self._items[digest] = (data, now + self.ttl_s)
        self.size += len(data)
        while self.size > self.max_bytes and len(self._items) > 1:
            _, (gone, _) = self._items.popitem(last=False)
            self.size -= len(gone)
            self.evicted += 1
        return digest

    def get(self, digest: str, now: float) -> bytes | None:
        self._expire(now)
        hit = self._items.get(digest)
        return hit[0] if hit is not None else None

    def _expire(self, now: float) -> None:
        while self._items:
            key, (data, until) = next(iter(self._items.items()))
            if until > now:
                break
            del self._items[key]
            self.size -= len(data)


def check_payload(data: bytes, digest: str, size: int) -> str | None:
    """Why fetched bytes are not the ones referenced (None: they are)."""
    if len(data) != size:
        return f"{len(data)} bytes fetched, the reference says {size}"
    got = hashlib.sha256(data).hexdigest()
    return None if got == digest else f"sha256 {got[:16]}... is not the referenced {digest[:16]}..."


__all__ = ["MAX_REF_BYTES", "REF_THRESHOLD", "REF_TTL_S", "RefStore", "check_payload"]
