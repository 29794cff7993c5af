"""Driver of one blob fetch: carries out FetchPlanner's requests, verifies and places each chunk.

Chunks land in place in `<blobs>/partial/<sha>.part` (a `.have` byte map beside it records the
verified ones, so a restarted fetch resumes; they are re-hashed on resume). A task hashes the
contiguous verified prefix as it grows, so the whole-blob check costs no extra pass at the end;
the blob enters the store only if that hash matches. Where chunks come from is `ChunkSource`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from federation.assets import Fetch, FetchPlanner, Manifest, PlanConfig
from federation.errors import FederationError
from federation.sansio import NodeId
from storage.blobs import BlobStore

log = logging.getLogger(__name__)

# Reads of the assembled prefix for the whole-blob hash: large enough to amortise the thread hop.
_HASH_READ_BYTES = 8 << 20
# Written bytes after which the partial file is flushed in the background, so the fsync that
# makes the blob durable at the end has little left to write (the disk works during the transfer).
_FLUSH_BYTES = 64 << 20

ChunkSource = Callable[[NodeId, str, int, int], Awaitable[bytes]]
HolderSource = Callable[[], Awaitable[list[NodeId]]]
# How often a running fetch re-reads who holds the blob (nodes that finished fetching it since).
HOLDERS_REFRESH_S = 2.0
Outcome = Literal["ok", "corrupt", "error"]


class FetchFailed(Exception):
    """The blob could not be assembled (no holder left, too many corrupt chunks, hash mismatch)."""


@dataclass
class FetchProgress:
    """What the API shows about one fetch (mutated by the driver only)."""

    sha256: str
    uri: str
    size: int
    chunks_total: int
    state: Literal["running", "done", "failed"] = "running"
    chunks_done: int = 0
    bytes_done: int = 0
    resumed_chunks: int = 0
    corrupt: int = 0
    errors: int = 0
    per_holder: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.sha256, "uri": self.uri, "size": self.size, "state": self.state,
                "chunks_total": self.chunks_total, "chunks_done": self.chunks_done, "bytes_done": self.bytes_done,
                "resumed_chunks": self.resumed_chunks, "corrupt": self.corrupt, "errors": self.errors,
                "per_holder": dict(self.per_holder), "error": self.error,
                "elapsed_s": round(self.elapsed_s if self.state != "running" else
                                   time.monotonic() - self.started, 3)}


class BlobFetch:
    """`await BlobFetch(...).run()` assembles `manifest`'s blob from `holders` into `blobs`."""

    def __init__(self, blobs: BlobStore, manifest: Manifest, holders: list[NodeId], source: ChunkSource,
                 cfg: PlanConfig, chunk_timeout_s: float, progress: FetchProgress,
                 more_holders: HolderSource | None = None, refresh_s: float = HOLDERS_REFRESH_S) -> None:
        self.blobs, self.m, self.source, self.cfg = blobs, manifest, source, cfg
        self.more_holders, self.refresh_s = more_holders, refresh_s
        self.holders, self.chunk_timeout_s, self.progress = holders, chunk_timeout_s, progress
        self._part = blobs.partial_path(manifest.sha256)
        self._have_path = self._part.with_suffix(".have")
        self._fd = -1
        self._hfd = -1
        # A cancelled to_thread call keeps running: file IO holds this lock and checks the fds are
        # still open, so a write can never land in a file descriptor number reused after close.
        self._io = threading.Lock()
        self._hash_buf = bytearray(_HASH_READ_BYTES)  # reused: no fresh pages per read
        self._unflushed = 0
        self._flush: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Raises: FetchFailed."""
        m, p = self.m, self.progress
        if await asyncio.to_thread(self.blobs.has, m.sha256):
            p.chunks_done, p.bytes_done = p.chunks_total, m.size
            return
        have = await asyncio.to_thread(self._open_partial)
        p.resumed_chunks = p.chunks_done = len(have)
        p.bytes_done = sum(m.span(i)[1] for i in have)
        plan = FetchPlanner(len(m.chunks), self.holders, self.cfg, frozenset(have))
        kick = asyncio.Event()
        hasher = asyncio.ensure_future(self._hash_prefix(plan, kick))  # owned: awaited or cancelled below
        tasks: set[asyncio.Task[tuple[Fetch, Outcome]]] = set()
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + self.refresh_s
        try:
            kick.set()
            while not plan.done:
                if self.more_holders is not None and loop.time() >= refresh_at:
                    refresh_at = loop.time() + self.refresh_s
                    await self._refresh_holders(plan)
                for f in plan.next(loop.time()):
                    tasks.add(asyncio.ensure_future(self._one(f)))
                if plan.failed is not None:
                    raise FetchFailed(plan.failed)
                wake = plan.wake_at()
                delay = None if wake is None or wake <= loop.time() else wake - loop.time()
                if self.more_holders is not None:
                    delay = max(0.0, min(delay if delay is not None else self.refresh_s,
                                         refresh_at - loop.time()))
                if not tasks:
                    if delay is None:
                        raise FetchFailed("no holder can serve the remaining chunks")
                    await asyncio.sleep(delay)  # a driver's timer: a backed-off holder comes back
                    continue
                done, tasks = await asyncio.wait(tasks, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    f, outcome = t.result()
                    self._record(plan, f, outcome, loop.time())
                    if outcome == "ok":
                        kick.set()
                        self._maybe_flush(m.span(f.index)[1])
            kick.set()
            digest = await hasher
            if digest != m.sha256:
                await asyncio.to_thread(self._discard)
                raise FetchFailed(f"the assembled blob hashes to {digest}, not {m.sha256} (bad manifest)")
            await asyncio.to_thread(self._adopt)
        finally:
            for t in tasks:
                t.cancel()
            hasher.cancel()
            owned: list[asyncio.Future[Any]] = [*tasks, hasher, *([self._flush] if self._flush else [])]
            for fut in owned:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fut
            self._close()

    async def _refresh_holders(self, plan: FetchPlanner) -> None:
        """Add nodes that came to hold the blob since the fetch started (they share the load)."""
        assert self.more_holders is not None
        try:
            now = await self.more_holders()
        except (FederationError, OSError) as e:  # the index is unreadable now: the next turn retries
            log.debug("holder refresh failed", extra={"error": str(e)})
            return
        new = [h for h in now if h not in plan.holders]
        if new:
            plan.add_holders(new)
            log.info("more holders for a running fetch", extra={"sha256": self.m.sha256, "added": len(new)})

    def _maybe_flush(self, written: int) -> None:
        """Start writing the partial file back (one flush at a time) once enough is unflushed."""
        self._unflushed += written
        if self._unflushed >= _FLUSH_BYTES and (self._flush is None or self._flush.done()):
            self._unflushed = 0
            self._flush = asyncio.ensure_future(asyncio.to_thread(self._flush_now))

    def _record(self, plan: FetchPlanner, f: Fetch, outcome: Outcome, now: float) -> None:
        p = self.progress
        if outcome == "ok":
            n = self.m.span(f.index)[1]
            plan.on_ok(f.index, f.holder, n)
            p.chunks_done += 1
            p.bytes_done += n
            p.per_holder[f.holder] = p.per_holder.get(f.holder, 0) + 1
        elif outcome == "corrupt":
            p.corrupt += 1
            log.warning("corrupt chunk from holder", extra={"sha256": self.m.sha256, "chunk": f.index,
                                                            "holder": f.holder})
            plan.on_corrupt(f.index, f.holder)
        else:
            p.errors += 1
            plan.on_error(f.index, f.holder, now)

    async def _one(self, f: Fetch) -> tuple[Fetch, Outcome]:
        offset, length = self.m.span(f.index)
        try:
            async with asyncio.timeout(self.chunk_timeout_s):
                data = await self.source(f.holder, self.m.sha256, offset, length)
        except (FederationError, OSError, TimeoutError) as e:
            log.debug("chunk request failed", extra={"holder": f.holder, "chunk": f.index,
                                                     "error": type(e).__name__})
            return f, "error"
        ok = await asyncio.to_thread(self._verify_write, f.index, offset, data)
        return f, "ok" if ok else "corrupt"

    # ----- blocking parts (worker threads) ------------------------------------------------
    def _open_partial(self) -> set[int]:
        m = self.m
        self._fd = os.open(self._part, os.O_RDWR | os.O_CREAT, 0o600)
        fresh = os.fstat(self._fd).st_size != m.size
        if fresh:
            os.ftruncate(self._fd, 0)
            # Blocks allocated up front: writes into a sparse file cost ~10x more here (ext4), and
            # a full disk fails now, not after half the transfer.
            if m.size:
                os.posix_fallocate(self._fd, 0, m.size)
        self._hfd = os.open(self._have_path, os.O_RDWR | os.O_CREAT, 0o600)
        marks = bytearray(os.pread(self._hfd, len(m.chunks), 0))
        if fresh or len(marks) != len(m.chunks):
            marks = bytearray(len(m.chunks))
        have: set[int] = set()
        for i, mark in enumerate(marks):
            if mark:
                off, n = m.span(i)
                if hashlib.sha256(os.pread(self._fd, n, off)).digest() == m.chunks[i]:
                    have.add(i)
                else:
                    marks[i] = 0
        os.ftruncate(self._hfd, 0)
        os.pwrite(self._hfd, bytes(marks), 0)
        return have

    def _verify_write(self, index: int, offset: int, data: bytes) -> bool:
        if len(data) != self.m.span(index)[1] or hashlib.sha256(data).digest() != self.m.chunks[index]:
            return False
        with self._io:
            if self._fd < 0:
                return False
            os.pwrite(self._fd, data, offset)
            os.pwrite(self._hfd, b"\x01", index)
        return True

    def _flush_now(self) -> None:
        with self._io:  # a private fd: the flush may outlive close() without touching a reused number
            if self._fd < 0:
                return
            fd = os.dup(self._fd)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _hash_range(self, h: hashlib._Hash, start: int, end: int) -> None:
        buf = memoryview(self._hash_buf)
        pos = start
        while pos < end:
            want = min(_HASH_READ_BYTES, end - pos)
            with self._io:
                if self._fd < 0:
                    raise FetchFailed("the fetch was closed")
                got = os.preadv(self._fd, [buf[:want]], pos)
            if not got:
                raise FetchFailed("the partial file is shorter than the blob")
            h.update(buf[:got])
            pos += got

    async def _hash_prefix(self, plan: FetchPlanner, kick: asyncio.Event) -> str:
        h = hashlib.sha256()
        nxt, count = 0, len(self.m.chunks)
        while nxt < count:
            await kick.wait()
            kick.clear()
            end = nxt
            while end < count and end in plan.done_chunks:
                end += 1
            if end > nxt:
                start_b = self.m.span(nxt)[0]
                end_b = self.m.size if end == count else self.m.span(end)[0]
                await asyncio.to_thread(self._hash_range, h, start_b, end_b)
                nxt = end
        return h.hexdigest()

    def _adopt(self) -> None:
        self._close()
        self.blobs.adopt(self.m.sha256, self._part)
        self._have_path.unlink(missing_ok=True)

    def _discard(self) -> None:
        self._close()
        self._part.unlink(missing_ok=True)
        self._have_path.unlink(missing_ok=True)

    def _close(self) -> None:
        with self._io:
            for name in ("_fd", "_hfd"):
                fd = getattr(self, name)
                if fd >= 0:
                    setattr(self, name, -1)
                    with contextlib.suppress(OSError):
                        os.close(fd)


__all__ = ["BlobFetch", "ChunkSource", "FetchFailed", "FetchProgress"]
