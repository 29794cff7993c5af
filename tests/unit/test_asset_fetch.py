"""BlobFetch (aiosd/assets/fetch.py) against a real BlobStore, with chunk sources in memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from aiosd.assets.fetch import BlobFetch, FetchFailed, FetchProgress
from federation.assets import Manifest, PlanConfig
from federation.sansio import NodeId
from storage.blobs import BlobStore

CHUNK = 4096


def manifest_of(data: bytes) -> Manifest:
    chunks = tuple(hashlib.sha256(data[i:i + CHUNK]).digest() for i in range(0, len(data), CHUNK))
    return Manifest(hashlib.sha256(data).hexdigest(), len(data), CHUNK, chunks)


def job(m: Manifest) -> FetchProgress:
    return FetchProgress(m.sha256, "t/x:1", m.size, len(m.chunks))


async def test_holders_that_appear_mid_fetch_share_the_rest(tmp_path: Path) -> None:
    data = os.urandom(40 * CHUNK + 5)
    m = manifest_of(data)
    a, b = NodeId("a"), NodeId("b")
    served: dict[str, int] = {"a": 0, "b": 0}
    appeared = asyncio.Event()

    async def source(holder: NodeId, sha: str, offset: int, length: int) -> bytes:
        served[holder] += 1
        if holder == "a":
            await asyncio.sleep(0.02)  # a slow first holder
        return data[offset:offset + length]

    async def more() -> list[NodeId]:
        if served["a"] >= 4:
            appeared.set()
            return [a, b]
        return [a]

    p = job(m)
    blobs = BlobStore(tmp_path)
    await BlobFetch(blobs, m, [a], source, PlanConfig(window_per_holder=2), 5.0, p, more, refresh_s=0.05).run()
    assert appeared.is_set() and served["b"] > served["a"] > 0
    assert blobs.path(m.sha256).read_bytes() == data
    assert p.per_holder["a"] + p.per_holder["b"] == len(m.chunks)
    assert not blobs.partial_path(m.sha256).exists()


async def test_a_wrong_manifest_is_caught_by_the_whole_blob_hash_and_nothing_is_stored(tmp_path: Path) -> None:
    data = os.urandom(9 * CHUNK)
    m = manifest_of(data)
    lying = Manifest("0" * 64, m.size, CHUNK, m.chunks)  # chunk digests fit, the blob digest does not

    async def source(holder: NodeId, sha: str, offset: int, length: int) -> bytes:
        return data[offset:offset + length]

    blobs = BlobStore(tmp_path)
    with pytest.raises(FetchFailed, match="hashes to"):
        await BlobFetch(blobs, lying, [NodeId("a")], source, PlanConfig(), 5.0, job(lying)).run()
    assert not blobs.has("0" * 64) and not blobs.partial_path("0" * 64).exists()
