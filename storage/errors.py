"""Errors raised by the storage layer.

    StorageError                 anything the LMDB store cannot do
    ├── StoreLockedError         another process holds the data dir
    ├── SchemaMismatchError      the env was written by another schema version
    ├── CorruptStoreError        the path does not hold a usable LMDB environment
    ├── DiskFullError            a write found no room (filesystem full, quota, I/O error, map limit)
    └── OutOfFilesError          the process has no file descriptor left (EMFILE/ENFILE)
"""

from __future__ import annotations


class StorageError(Exception):
    """The store could not do what was asked; the message says why in one sentence."""


class StoreLockedError(StorageError):
    """Another aiosd process already has this data dir open."""


class SchemaMismatchError(StorageError):
    """The environment records a schema version this code does not understand."""


class CorruptStoreError(StorageError):
    """The path exists but is not a usable LMDB environment (foreign, truncated or damaged)."""


class DiskFullError(StorageError):
    """A write found no room; nothing was written (LMDB aborts the transaction). Reads still work,
    and writes work again once space returns."""


class OutOfFilesError(StorageError):
    """The process ran out of file descriptors; retry once some are closed."""


__all__ = ["CorruptStoreError", "DiskFullError", "OutOfFilesError", "SchemaMismatchError", "StorageError",
           "StoreLockedError"]
