"""Asset transfer core: the chunk request on the wire, the chunk manifest and a sans-IO fetch planner.

The planner decides which chunk to ask of which holder, spreads chunks over holders, retries a
corrupt chunk elsewhere, backs off from an unreachable holder and drops a dead one. It does no IO,
reads no clock and hashes nothing: the driver (aiosd/assets/fetch.py) feeds it outcomes and `now`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from federation.sansio import NodeId
from federation.strict import Wire

DIGEST_PATTERN = r"^[0-9a-f]{64}$"
DIGEST_BYTES = 32
# 16 MiB: the largest chunk a holder serves in one answer; bounds the memory one request costs
# on both sides (in-flight window x chunk size). Manifests are fetched in one answer too, so this
# also bounds an asset to 16 MiB / 32 B = 524,288 chunks (512 GiB at 1 MiB chunks).
MAX_READ_BYTES = 16 << 20


class ChunkGet(Wire):
    """Ask a holder for `length` bytes of blob `sha256` at `offset` (answered as raw bytes)."""

    kind: Literal["asset.chunk.get"] = "asset.chunk.get"
    v: Literal[1] = 1
    sha256: str = Field(pattern=DIGEST_PATTERN)
    offset: int = Field(ge=0)
    length: int = Field(ge=1, le=MAX_READ_BYTES)


ASSET_MODELS: tuple[type[BaseModel], ...] = (ChunkGet,)


def chunk_count(size: int, chunk_bytes: int) -> int:
    """Chunks of a `size`-byte blob cut every `chunk_bytes` (0 for an empty blob)."""
    if chunk_bytes < 1 or size < 0:
        raise ValueError("size must be >= 0 and chunk_bytes >= 1")
    return math.ceil(size / chunk_bytes)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A blob cut into fixed-size chunks, with each chunk's raw sha256."""

    sha256: str
    size: int
    chunk_bytes: int
    chunks: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.chunks) != chunk_count(self.size, self.chunk_bytes):
            raise ValueError(f"manifest: {len(self.chunks)} chunk digests for {self.size} bytes "
                             f"in {self.chunk_bytes}-byte chunks")
        if any(len(c) != DIGEST_BYTES for c in self.chunks):
            raise ValueError("manifest: every chunk digest is 32 bytes")

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk `index`."""
        if not 0 <= index < len(self.chunks):
            raise IndexError(index)
        offset = index * self.chunk_bytes
        return offset, min(self.chunk_bytes, self.size - offset)

    def to_bytes(self) -> bytes:
        """The manifest blob: the chunk digests concatenated (its sha256 names it in the registry)."""
        return b"".join(self.chunks)

    @classmethod
    def from_bytes(cls, sha256: str, size: int, chunk_bytes: int, data: bytes) -> Manifest:
        """Raises: ValueError when `data` is not the right number of 32-byte digests."""
        if len(data) % DIGEST_BYTES:
            raise ValueError("manifest: length is not a multiple of 32")
        chunks = tuple(data[i:i + DIGEST_BYTES] for i in range(0, len(data), DIGEST_BYTES))
        return cls(sha256, size, chunk_bytes, chunks)


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """Limits of one fetch (units in names)."""

    window_per_holder: int = 4  # requests in flight per holder: hides one round trip per chunk
    max_chunk_attempts: int = 8  # corrupt answers tolerated per chunk before the fetch fails
    holder_max_failures: int = 3  # consecutive failed periods before a holder is dropped
    holder_max_corrupt: int = 3  # corrupt chunks from one holder before it is dropped
    backoff_s: float = 0.25  # first back-off after a holder fails; doubles per failure


@dataclass(frozen=True, slots=True)
class Fetch:
    """Effect: ask `holder` for chunk `index`."""

    index: int
    holder: NodeId


@dataclass
class HolderState:
    inflight: int = 0
    assigned: int = 0
    served: int = 0
    served_bytes: int = 0
    failures: int = 0
    corrupt: int = 0
    down_until: float = 0.0
    dropped: bool = False


@dataclass
class _Chunk:
    attempts: int = 0
    bad: set[NodeId] = field(default_factory=set)


class FetchPlanner:
    """Which chunk from which holder; resumes from `have` (chunks already verified on disk)."""

    def __init__(self, count: int, holders: list[NodeId], cfg: PlanConfig = PlanConfig(),
                 have: frozenset[int] = frozenset()) -> None:
        self.count, self.cfg = count, cfg
        self.holders: dict[NodeId, HolderState] = {}
        self.done_chunks: set[int] = {i for i in have if 0 <= i < count}
        self.inflight: dict[int, NodeId] = {}
        self._pending: deque[int] = deque(i for i in range(count) if i not in self.done_chunks)
        self._chunks: dict[int, _Chunk] = {}
        self.failed: str | None = None
        self.add_holders(holders)

    # ----- inputs -------------------------------------------------------------------------
    def add_holders(self, holders: list[NodeId]) -> None:
        for h in holders:
            self.holders.setdefault(h, HolderState())

    def on_ok(self, index: int, holder: NodeId, nbytes: int) -> None:
        """Chunk `index` arrived from `holder` and hashed right."""
        self._release(index, holder)
        st = self.holders[holder]
        st.served += 1
        st.served_bytes += nbytes
        st.failures = 0
        self.done_chunks.add(index)

    def on_corrupt(self, index: int, holder: NodeId) -> None:
        """`holder` answered chunk `index` with bytes that hash wrong: ask someone else."""
        self._release(index, holder)
        st = self.holders[holder]
        st.corrupt += 1
        if st.corrupt >= self.cfg.holder_max_corrupt:
            st.dropped = True
        c = self._chunks.setdefault(index, _Chunk())
        c.attempts += 1
        c.bad.add(holder)
        if c.attempts >= self.cfg.max_chunk_attempts:
            self.failed = f"chunk {index}: {c.attempts} corrupt answers"
        self._requeue(index)

    def on_error(self, index: int, holder: NodeId, now: float) -> None:
        """`holder` did not answer chunk `index` (unreachable, timed out, refused)."""
        self._release(index, holder)
        st = self.holders[holder]
        if st.down_until <= now:  # one failure per down period: a window of requests fails together
            st.failures += 1
            st.down_until = now + self.cfg.backoff_s * 2 ** (st.failures - 1)
            if st.failures >= self.cfg.holder_max_failures:
                st.dropped = True
        self._requeue(index)

    # ----- outputs ------------------------------------------------------------------------
    def next(self, now: float) -> list[Fetch]:
        """Requests to start now (each chunk goes to at most one holder at a time)."""
        out: list[Fetch] = []
        if self.failed is not None:
            return out
        live = [h for h, st in self.holders.items() if not st.dropped]
        if not live and not self.done:
            self.failed = "no holder left: every holder failed or served corrupt chunks"
            return out
        usable = [h for h in live if self.holders[h].down_until <= now]
        deferred: list[int] = []
        while self._pending:
            free = [h for h in usable if self.holders[h].inflight < self.cfg.window_per_holder]
            if not free:
                break
            index = self._pending.popleft()
            bad = self._chunks[index].bad if index in self._chunks else set()
            # Prefer holders that have not served this chunk corrupt; fall back to them only when
            # no other live holder exists (the corruption may have been on the way, not on disk).
            others = any(h not in bad for h in live)
            candidates = [h for h in free if h not in bad] if others else free
            if not candidates:  # a holder that has not failed this chunk exists but is busy: wait
                deferred.append(index)
                continue
            h = min(candidates, key=lambda x: (self.holders[x].inflight, self.holders[x].assigned, x))
            st = self.holders[h]
            st.inflight += 1
            st.assigned += 1
            self.inflight[index] = h
            out.append(Fetch(index, h))
        self._pending.extendleft(reversed(deferred))
        return out

    def wake_at(self) -> float | None:
        """When a backed-off holder becomes usable again (None: nothing to wait for)."""
        times = [st.down_until for st in self.holders.values() if not st.dropped]
        return min(times) if times else None

    @property
    def done(self) -> bool:
        return len(self.done_chunks) == self.count

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ----- internals ----------------------------------------------------------------------
    def _release(self, index: int, holder: NodeId) -> None:
        if self.inflight.get(index) != holder:
            raise ValueError(f"chunk {index} is not in flight to {holder}")
        del self.inflight[index]
        self.holders[holder].inflight -= 1

    def _requeue(self, index: int) -> None:
        # Front of the queue: the whole-blob hash advances over a contiguous prefix.
        self._pending.appendleft(index)


__all__ = [
    "ASSET_MODELS",
    "DIGEST_PATTERN",
    "MAX_READ_BYTES",
    "ChunkGet",
    "Fetch",
    "FetchPlanner",
    "HolderState",
    "Manifest",
    "PlanConfig",
    "chunk_count",
]
