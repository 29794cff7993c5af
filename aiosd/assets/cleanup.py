"""What an asset record's deletion leaves behind, removed: the image record it backs, this node's
copy of its blob and manifest (unless another asset names them) and this node's holder record.

Every node runs `AssetCleanup.run()` on the registry's change stream, so a deletion made on any
node frees the disk of every node that fetched the blob. Only the admin that deleted the asset
can delete the image record (the images table is admin-only); elsewhere that delete is refused
and replication brings the admin's tombstone.
"""

from __future__ import annotations

import asyncio
import logging

from aiosd.registry.service import Event, RegistryService
from federation.errors import FederationError
from storage.blobs import BlobStore

log = logging.getLogger(__name__)

ASSETS = "assets"
NODES = "nodes"
IMAGES = "images"  # images/<name> = {name, uri: "image:<name>", sha256, ...} (aiosd/assets/images.py)
IMAGE_PREFIX = "image:"
# Pause before watching again when the change stream was cut (this watcher fell behind).
REWATCH_S = 0.5


class AssetCleanup:
    """`await AssetCleanup(registry, blobs, node_id).run()`: runs until cancelled."""

    def __init__(self, registry: RegistryService, blobs: BlobStore, node_id: str) -> None:
        self.registry, self.blobs, self.node_id = registry, blobs, node_id
        self._refs: dict[str, tuple[str, ...]] = {}  # asset uri -> (blob sha256, manifest sha256)
        self.removed_blobs = 0

    async def run(self) -> None:
        while True:
            async with self.registry.watch(frozenset({ASSETS})) as events:
                # Watch first, then list: a change in between is seen by the stream.
                self._refs = {e.key: _refs(e.value) for e in await self.registry.scan(ASSETS)}
                async for ev in events:
                    await self._on_event(ev)
            await asyncio.sleep(REWATCH_S)

    async def _on_event(self, ev: Event) -> None:
        uri = ev.entry.key
        if ev.op == "put":
            self._refs[uri] = _refs(ev.entry.value)
            return
        try:
            await self.forget(uri, self._refs.pop(uri, ()))
        except (OSError, ValueError, FederationError) as e:
            log.warning("asset cleanup failed", extra={"uri": uri, "error": str(e)})

    async def forget(self, uri: str, digests: tuple[str, ...]) -> None:
        """Asset `uri` (which named `digests`) is gone: remove what only it kept."""
        if uri.startswith(IMAGE_PREFIX):
            name = uri[len(IMAGE_PREFIX):]
            img = await self.registry.get(IMAGES, name)
            if img is not None and img.value.get("uri") == uri:
                try:
                    await self.registry.delete(IMAGES, name)
                    log.info("image record removed with its asset", extra={"image": name})
                except FederationError:  # not an admin here: the admin's delete replicates
                    pass
        still = {d for refs in self._refs.values() for d in refs}
        for d in digests:
            if d in still:
                continue
            if await asyncio.to_thread(self.blobs.delete, d):
                self.removed_blobs += 1
            key = f"{self.node_id}/blob/{d}"
            if await self.registry.get(NODES, key) is not None:
                await self.registry.delete(NODES, key)
        if digests:
            log.info("asset removed from this node", extra={"uri": uri, "blobs": len(digests)})


def _refs(value: dict[str, object]) -> tuple[str, ...]:
    return tuple(str(value[k]) for k in ("sha256", "manifest") if isinstance(value.get(k), str) and value[k])


__all__ = ["ASSETS", "IMAGES", "NODES", "AssetCleanup"]
