"""Service "assets": content-addressed blobs indexed in the replicated registry, fetched from peers.

Records: `assets/<uri>` = {uri, type, name, sha256, size, chunk_bytes, manifest (sha256 of the
chunk-digest blob), holders (publisher), publisher, created_at}; a node that holds a whole blob
says so in its own self-keyed record `nodes/<node>/blob/<sha256>` (the assets table is admin-only
and last-writer-wins, so one shared holders list would lose concurrent additions). Peers read
chunks over the p2p raw channel (`asset.chunk.get`). Images ride on top (aiosd/assets/images.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from aiosd.assets.cleanup import ASSETS, NODES, AssetCleanup
from aiosd.assets.errors import AssetError
from aiosd.assets.fetch import BlobFetch, FetchFailed, FetchProgress
from aiosd.context import NodeContext, ServiceKey
from aiosd.membership.service import MEMBERSHIP_KEY, MembershipService
from aiosd.registry.service import REGISTRY_KEY, RegistryService
from federation.assets import ASSET_MODELS, MAX_READ_BYTES, ChunkGet, Manifest, PlanConfig
from federation.envelope import Verified
from federation.errors import FederationError, PeerUnreachable
from federation.sansio import NodeId
from federation.transport import FileRange
from storage.blobs import BlobNotFound, BlobStore, BlobWriter, check_digest

log = logging.getLogger(__name__)

URI_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}$")
ASSET_TYPES = ("file", "image", "policy", "model", "data")
# Finished fetches kept for `GET /v1/assets/fetches` (FIFO beyond this).
MAX_JOBS = 64
# Passes over the holders for the manifest (small: one request each) before the fetch fails.
MANIFEST_ROUNDS = 3
FAULTS_ENV = "AIOSD_TEST_FAULTS"


class ServeFaults:
    """Test hook (AIOSD_TEST_FAULTS=1): corrupt the next N chunk answers (not whole-blob reads such
    as manifests), delay every answer."""

    def __init__(self) -> None:
        self.corrupt_next = 0
        self.delay_s = 0.0
        self.corrupted = 0


def holder_key(node: str, sha256: str) -> str:
    return f"{node}/blob/{sha256}"


def _pread(path: Path, offset: int, length: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise LookupError(path.name) from None
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _open_range(path: Path, offset: int, length: int) -> FileRange:
    """`length` bytes of the file at `offset`, cut to its end (an empty range past it)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 -- the transport closes it once sent
    except FileNotFoundError:
        raise LookupError(path.name) from None
    size = os.fstat(f.fileno()).st_size
    return FileRange(f, min(offset, size), max(0, min(length, size - offset)))


class AssetsService:
    """Service "assets": publish, list, look up, fetch and serve blobs."""

    name = "assets"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.assets
        self.node_id = NodeId(ctx.identity.node_id)
        self.blobs = BlobStore(ctx.data_dir / "blobs")
        self.faults = ServeFaults() if os.environ.get(FAULTS_ENV) == "1" else None
        self.jobs: OrderedDict[str, FetchProgress] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._registry: RegistryService | None = None
        self._membership: MembershipService | None = None
        self.served_chunks = 0
        self.cleanup: AssetCleanup | None = None

    async def __aenter__(self) -> Self:
        self._registry = self.ctx.find(REGISTRY_KEY)
        self._membership = self.ctx.find(MEMBERSHIP_KEY)
        if self._membership is not None:
            t = self._membership.transport
            self._membership.add_kinds(ASSET_MODELS)
            t.route_raw("asset.chunk.get", self._on_chunk_get)
        if self._registry is not None:
            self.cleanup = AssetCleanup(self._registry, self.blobs, self.node_id)
            task = asyncio.create_task(self.cleanup.run(), name="asset-cleanup")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    @property
    def plan_config(self) -> PlanConfig:
        s = self.settings
        return PlanConfig(window_per_holder=s.window_per_holder, max_chunk_attempts=s.max_chunk_attempts,
                          holder_max_failures=s.holder_max_failures, backoff_s=s.retry_backoff_s)

    # ----- publish ----------------------------------------------------------------------------
    def writer(self, chunk_bytes: int | None = None) -> BlobWriter:
        return self.blobs.writer(chunk_bytes or self.settings.chunk_bytes)

    async def publish(self, uri: str, writer: BlobWriter, *, type_: str = "file", name: str = "") -> dict[str, Any]:
        """Store what `writer` received and index it as `uri`. Raises: AssetError."""
        check_uri(uri)
        if type_ not in ASSET_TYPES:
            raise AssetError(f"type: must be one of {', '.join(ASSET_TYPES)}", 422, "invalid")
        digest, chunks = await asyncio.to_thread(writer.commit)
        manifest = Manifest(digest, writer.size, writer.chunk_bytes, tuple(chunks))
        mdigest = await asyncio.to_thread(self.blobs.put, manifest.to_bytes())
        record = {"uri": uri, "type": type_, "name": name or uri, "sha256": digest, "size": writer.size,
                  "chunk_bytes": writer.chunk_bytes, "chunks": len(chunks), "manifest": mdigest,
                  "holders": [self.node_id], "publisher": self.node_id, "created_at": round(time.time(), 3)}
        reg = self.registry()
        try:
            await reg.put(ASSETS, uri, record)
        except FederationError as e:  # WriteRefused: this node's certificate lacks the admin role
            raise AssetError(f"cannot publish {uri}: {e}", 403, "forbidden") from None
        await self._announce(digest, writer.size)
        log.info("asset published", extra={"uri": uri, "sha256": digest, "size": writer.size})
        return record

    async def _announce(self, sha256: str, size: int) -> None:
        await self.registry().put(NODES, holder_key(self.node_id, sha256),
                              {"sha256": sha256, "size": size, "at": round(time.time(), 3)})

    # ----- read the index ----------------------------------------------------------------------
    async def lookup(self, uri: str) -> dict[str, Any]:
        """The asset record of `uri`. Raises: AssetError(404)."""
        check_uri(uri)
        e = await self.registry().get(ASSETS, uri)
        if e is None:
            raise AssetError(f"no asset {uri} in the registry (push it with `aiosd asset push`, or wait "
                             "for replication to bring it here)", 404, "not_found")
        return dict(e.value)

    async def holders(self, sha256: str, record: dict[str, Any] | None = None) -> list[str]:
        """Nodes that hold the whole blob: the publisher plus every node that announced it."""
        out = list(record.get("holders", [])) if record else []
        suffix = f"/blob/{sha256}"
        for e in await self.registry().scan(NODES):
            if e.key.endswith(suffix):
                node = e.key.split("/", 1)[0]
                if node not in out:
                    out.append(node)
        return out

    async def list(self) -> list[dict[str, Any]]:
        entries = await self.registry().scan(ASSETS)
        held: dict[str, list[str]] = {}
        for e in await self.registry().scan(NODES):
            parts = e.key.split("/")
            if len(parts) == 3 and parts[1] == "blob":
                held.setdefault(parts[2], []).append(parts[0])
        out = []
        for e in entries:
            v = dict(e.value)
            sha = str(v.get("sha256", ""))
            hs = list(v.get("holders", []))
            hs += [n for n in held.get(sha, []) if n not in hs]
            v["holders"] = hs
            v["local"] = await asyncio.to_thread(self._has, sha)
            out.append(v)
        return out

    def _has(self, sha256: str) -> bool:
        try:
            return self.blobs.has(sha256)
        except ValueError:
            return False

    # ----- fetch -------------------------------------------------------------------------------
    async def start_fetch(self, uri: str) -> FetchProgress:
        """Start (or join) fetching `uri`'s blob from its holders. Raises: AssetError(404)."""
        rec = await self.lookup(uri)
        sha = check_digest(str(rec["sha256"]))
        job = self.jobs.get(sha)
        if job is not None and (job.state != "failed" or sha in self._running):
            return job
        chunks = int(rec["chunks"])
        job = FetchProgress(sha, uri, int(rec["size"]), chunks)
        self.jobs[sha] = job
        self.jobs.move_to_end(sha)
        while len(self.jobs) > MAX_JOBS:
            old = next(iter(self.jobs))
            if old in self._running:
                break
            self.jobs.pop(old)
        task = asyncio.get_running_loop().create_task(self._run_fetch(rec, job), name=f"asset-fetch-{sha[:12]}")
        self._running[sha] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def fetch(self, uri: str) -> FetchProgress:
        """Fetch `uri`'s blob and return when it is in the store. Raises: AssetError."""
        job = await self.start_fetch(uri)
        task = self._running.get(job.sha256)
        if task is not None:
            await asyncio.shield(task)
        if job.state != "done":
            raise AssetError(f"fetching {uri} failed: {job.error}", 502, "fetch_failed")
        return job

    async def _run_fetch(self, rec: dict[str, Any], job: FetchProgress) -> None:
        try:
            manifest = await self._manifest(rec)
            holders = [NodeId(h) for h in await self.holders(job.sha256, rec) if h != self.node_id]
            if not await asyncio.to_thread(self._has, job.sha256):
                if not holders:
                    raise FetchFailed("no other node holds it")
                async def more() -> list[NodeId]:
                    return [NodeId(h) for h in await self.holders(job.sha256, rec) if h != self.node_id]

                fetch = BlobFetch(self.blobs, manifest, holders, self._read_chunk, self.plan_config,
                                  self.settings.chunk_timeout_s, job, more)
                await fetch.run()
            await self._announce(job.sha256, job.size)
            job.chunks_done, job.bytes_done, job.state = job.chunks_total, job.size, "done"
            log.info("asset fetched", extra={"uri": job.uri, "sha256": job.sha256,
                                             "s": round(time.monotonic() - job.started, 3),
                                             "holders": len(job.per_holder)})
        except asyncio.CancelledError:
            job.state, job.error = "failed", "cancelled (the daemon is stopping)"
            raise
        except (FetchFailed, AssetError, FederationError, OSError, ValueError) as e:
            job.state, job.error = "failed", str(e)
            log.warning("asset fetch failed", extra={"uri": job.uri, "error": str(e)})
        except Exception as e:  # one fetch is a unit of work: report it, keep the daemon
            job.state, job.error = "failed", f"internal error: {type(e).__name__}"
            log.exception("asset fetch crashed", extra={"uri": job.uri})
        finally:
            job.elapsed_s = time.monotonic() - job.started
            self._running.pop(job.sha256, None)

    async def fetch_whole(self, sha256: str, size: int, hint: Sequence[str] = ()) -> None:
        """Bring a small blob (<= 16 MiB, e.g. a policy archive) here in one request from the first
        holder that answers with the right bytes: the nodes in `hint` first (its publisher), then
        those that announced it. Stored and announced, so the next node can fetch it from here.

        Raises: FetchFailed (too large, no holder, none answered with the right bytes)."""
        if await asyncio.to_thread(self._has, sha256):
            return
        if not 0 <= size <= MAX_READ_BYTES:
            raise FetchFailed(f"blob {sha256[:16]} is {size} bytes; one request carries at most {MAX_READ_BYTES}")
        candidates = [h for h in dict.fromkeys([*hint, *await self.holders(sha256)]) if h != self.node_id]
        await self._fetch_small(sha256, size, candidates, rounds=1)
        await self._announce(sha256, size)

    async def _manifest(self, rec: dict[str, Any]) -> Manifest:
        """The chunk manifest: local, or fetched whole from a holder and checked by its digest."""
        mdigest = check_digest(str(rec["manifest"]))
        size, chunk_bytes, count = int(rec["size"]), int(rec["chunk_bytes"]), int(rec["chunks"])
        want = 32 * count
        if want > MAX_READ_BYTES:
            raise FetchFailed(f"manifest of {count} chunks is larger than {MAX_READ_BYTES} bytes")
        try:
            data = await asyncio.to_thread(self.blobs.get, mdigest)
        except BlobNotFound:
            data = await self._fetch_manifest(rec, mdigest, want) if want else b""
        return Manifest.from_bytes(str(rec["sha256"]), size, chunk_bytes, data)

    async def _fetch_manifest(self, rec: dict[str, Any], mdigest: str, want: int) -> bytes:
        """The manifest blob from a node that holds the asset (a few rounds: a corrupt answer may
        have been damaged on the way)."""
        holders = [h for h in await self.holders(str(rec["sha256"]), rec) if h != self.node_id]
        return await self._fetch_small(mdigest, want, holders, rounds=MANIFEST_ROUNDS)

    async def _fetch_small(self, digest: str, size: int, holders: Sequence[str], *, rounds: int) -> bytes:
        """Blob `digest` (`size` bytes, one request) from the first of `holders` that answers it
        right; stored here. Raises: FetchFailed naming what each holder did."""
        why: list[str] = []
        for _ in range(rounds):
            for h in holders:
                try:
                    got = await self._read_chunk(NodeId(h), digest, 0, size) if size else b""
                except (FederationError, OSError) as e:
                    why.append(f"{h}: {type(e).__name__}")
                    continue
                if len(got) == size and hashlib.sha256(got).hexdigest() == digest:
                    await asyncio.to_thread(self.blobs.put, got)
                    return got
                log.warning("corrupt blob from holder", extra={"holder": h, "sha256": digest})
                why.append(f"{h}: wrong bytes")
        raise FetchFailed(f"no node that holds blob {digest[:16]} answered with it"
                          + (f" ({'; '.join(why[:4])})" if why else " (none is known)"))

    async def _read_chunk(self, holder: NodeId, sha256: str, offset: int, length: int) -> bytes:
        if self._membership is None:
            raise PeerUnreachable(holder, "this node has no p2p transport")
        addr = dict(self._membership.alive()).get(holder)
        if addr is None:
            raise PeerUnreachable(holder, "not an alive member")
        body = ChunkGet(sha256=sha256, offset=offset, length=length)
        data: bytes = await self._membership.transport.request_raw(
            addr, body.kind, body, max_bytes=length, timeout_s=self.settings.chunk_timeout_s, to=holder)
        return data

    async def _on_chunk_get(self, v: Verified) -> bytes | FileRange:
        body: ChunkGet = v.body  # type: ignore[assignment]  # routed kind: ChunkGet
        f = self.faults
        if f is None:  # the kernel sends the bytes (sendfile): no copy through this process
            self.served_chunks += 1
            return await asyncio.to_thread(_open_range, self.blobs.path(body.sha256), body.offset, body.length)
        data = await asyncio.to_thread(_pread, self.blobs.path(body.sha256), body.offset, body.length)
        if f.delay_s:
            await asyncio.sleep(f.delay_s)
        whole = body.offset == 0 and len(data) == await asyncio.to_thread(self.blobs.size, body.sha256)
        if f.corrupt_next > 0 and data and not whole:  # chunks only: manifests are read whole
            f.corrupt_next -= 1
            f.corrupted += 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.served_chunks += 1
        return data

    def registry(self) -> RegistryService:
        if self._registry is None:
            raise AssetError("the registry service is not running on this node", 503, "unavailable")
        return self._registry


def check_uri(uri: str) -> str:
    if not isinstance(uri, str) or not URI_RE.match(uri):
        raise AssetError(f"uri: {str(uri)[:80]!r} is not a valid asset URI (letters, digits and ._:/@+=-, "
                         "at most 200 characters, starting with a letter or digit)", 422, "invalid")
    return uri


ASSETS_KEY: ServiceKey[AssetsService] = ServiceKey("assets")


def assets_service(ctx: NodeContext) -> AssetsService:
    return AssetsService(ctx)


__all__ = ["ASSETS_KEY", "ASSET_TYPES", "AssetError", "AssetsService", "ServeFaults", "assets_service", "check_uri",
           "holder_key"]
