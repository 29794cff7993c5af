"""storage: the node's one LMDB environment, typed tables, batches and snapshots."""

from storage.errors import (
    CorruptStoreError,
    DiskFullError,
    OutOfFilesError,
    SchemaMismatchError,
    StorageError,
    StoreLockedError,
)
from storage.store import SCHEMA_VERSION, Batch, ReadTxn, Store, WriteTxn
from storage.tables import MAX_KEY_BYTES, Table, encode_key

__all__ = [
    "MAX_KEY_BYTES",
    "SCHEMA_VERSION",
    "Batch",
    "CorruptStoreError",
    "DiskFullError",
    "OutOfFilesError",
    "ReadTxn",
    "SchemaMismatchError",
    "StorageError",
    "Store",
    "StoreLockedError",
    "Table",
    "WriteTxn",
    "encode_key",
]
