"""Errors raised by the storage layer.

    StorageError                 anything the LMDB store cannot do
    ├── StoreLockedError         another process holds the data dir
    ├── SchemaMismatchError      the env was written by another schema version
    └── CorruptStoreError        the path does not hold a usable LMDB environment
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


__all__ = ["CorruptStoreError", "SchemaMismatchError", "StorageError", "StoreLockedError"]
