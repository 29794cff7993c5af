"""Content-addressed blobs (sha256) in a directory: put, get (verified), path, has, delete.

Layout: `<root>/sha256/<first 2 hex>/<64 hex>`; a write goes to a temp file, is fsynced and renamed,
so a blob is either whole or absent. This module does not index blobs (the registries do) and
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
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


__all__ = ["CHUNK_BYTES", "BlobCorrupt", "BlobNotFound", "BlobStore", "check_digest", "sha256_hex"]
