"""Content-addressed blobs (sha256) in a directory: put, get (verified), path, has, delete.

Layout: `<root>/sha256/<first 2 hex>/<64 hex>`; a write goes to a temp file, is fsynced and renamed,
so a blob is either whole or absent. Transfers assemble under `<root>/partial/` and `adopt` the
finished file. `BlobWriter` hashes the whole blob and each fixed-size chunk in one pass. This module does not index blobs (the registries do) and
does not transfer them. Every method does disk IO: async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from storage.errors import StorageError
from storage.files import fsync_dir

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
# Why 1 MiB: large enough that hashing dominates syscalls, small enough to stay off the heap.
CHUNK_BYTES = 1 << 20


class BlobNotFound(StorageError, LookupError):
    """No blob under that digest."""


class BlobCorrupt(StorageError):
    """A stored blob no longer hashes to its name (disk damage or tampering)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """The digest if it is 64 lowercase hex chars; ValueError otherwise."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise ValueError(f"a blob digest is 64 lowercase hex characters (sha256), got {str(digest)[:80]!r}")
    return digest


class BlobStore:
    """Blobs under `root`, named by the sha256 of their content."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "partial").mkdir(parents=True, exist_ok=True, mode=0o700)

    def partial_path(self, digest: str) -> Path:
        """Where a transfer of `digest` assembles the blob (kept across restarts, for resume)."""
        return self.root / "partial" / f"{check_digest(digest)}.part"

    def adopt(self, digest: str, src: Path) -> None:
        """Move `src`, whose sha256 the caller verified to be `digest`, into the store (fsync + rename)."""
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(src, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(src, final)
        fsync_dir(final.parent)  # the rename itself survives a crash

    def writer(self, chunk_bytes: int = CHUNK_BYTES) -> BlobWriter:
        """A streaming writer into a temp file; `commit()` stores it and returns its digest."""
        return BlobWriter(self, chunk_bytes)

    def put_file_chunked(self, src: Path, chunk_bytes: int = CHUNK_BYTES) -> tuple[str, list[bytes]]:
        """Store a file's content (one read); return its digest and each chunk's raw sha256."""
        w = self.writer(chunk_bytes)
        try:
            with open(src, "rb") as f:
                for piece in iter(lambda: f.read(chunk_bytes), b""):
                    w.write(piece)
        except BaseException:
            w.abort()
            raise
        return w.commit()

    def path(self, digest: str) -> Path:
        d = check_digest(digest)
        return self.root / "sha256" / d[:2] / d

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob sha256:{digest}") from None

    def put(self, data: bytes) -> str:
        """Store `data`; return its digest (storing the same bytes twice is a no-op)."""
        digest = sha256_hex(data)
        if self.has(digest):
            return digest
        self._commit(digest, iter([data]))
        return digest

    def put_file(self, src: Path) -> str:
        """Store a file's content, streaming; return its digest."""
        h = hashlib.sha256()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if not self.has(digest):
            with open(src, "rb") as f:
                self._commit(digest, iter(lambda: f.read(CHUNK_BYTES), b""))
        return digest

    def get(self, digest: str, *, verify: bool = True) -> bytes:
        """The blob's bytes. Raises: BlobNotFound; BlobCorrupt when `verify` and the hash differs."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob sha256:{digest}") from None
        if verify and sha256_hex(data) != digest:
            raise BlobCorrupt(f"blob sha256:{digest} is corrupt (its content hashes differently)")
        return data

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[str]:
        for sub in sorted((self.root / "sha256").iterdir()):
            for f in sorted(sub.iterdir()):
                if _DIGEST_RE.match(f.name):
                    yield f.name

    def _commit(self, digest: str, chunks: Iterator[bytes]) -> None:
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="blob-")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if h.hexdigest() != digest:  # the source changed while we copied it
                raise BlobCorrupt(f"content changed while storing blob sha256:{digest}")
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class BlobWriter:
    """Bytes in any pieces → a temp file, the blob sha256 and per-chunk sha256s (one pass)."""

    def __init__(self, store: BlobStore, chunk_bytes: int = CHUNK_BYTES) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes: must be >= 1")
        self.store, self.chunk_bytes = store, chunk_bytes
        fd, tmp = tempfile.mkstemp(dir=store.root / "tmp", prefix="blob-")
        self.tmp = Path(tmp)
        self._f = os.fdopen(fd, "wb")
        self._whole = hashlib.sha256()
        self._chunk = hashlib.sha256()
        self._in_chunk = 0
        self.size = 0
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._f.write(data)
        self._whole.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            take = min(len(view), self.chunk_bytes - self._in_chunk)
            self._chunk.update(view[:take])
            self._in_chunk += take
            view = view[take:]
            if self._in_chunk == self.chunk_bytes:
                self.chunks.append(self._chunk.digest())
                self._chunk, self._in_chunk = hashlib.sha256(), 0

    def commit(self) -> tuple[str, list[bytes]]:
        """Store the blob (no-op if present); return (digest, chunk digests)."""
        if self._in_chunk:
            self.chunks.append(self._chunk.digest())
            self._chunk, self._in_chunk = hashlib.sha256(), 0
        digest = self._whole.hexdigest()
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            if self.store.has(digest):
                self.tmp.unlink(missing_ok=True)
            else:
                final = self.store.path(digest)
                final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.replace(self.tmp, final)
                fsync_dir(final.parent)
        except BaseException:
            self.abort()
            raise
        return digest, self.chunks

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.tmp.unlink(missing_ok=True)


def chunk_digests(path: Path, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """The raw sha256 of each `chunk_bytes` piece of a file (the last may be shorter)."""
    out: list[bytes] = []
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(chunk_bytes), b""):
            out.append(hashlib.sha256(piece).digest())
    return out


__all__ = [
    "CHUNK_BYTES",
    "BlobCorrupt",
    "BlobNotFound",
    "BlobStore",
    "BlobWriter",
    "check_digest",
    "chunk_digests",
    "sha256_hex",
]
