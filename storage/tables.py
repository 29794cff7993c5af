"""Typed tables: a name plus the codec for its values (msgpack underneath).

A `Table` is a declaration, not a handle: any module declares the tables it owns at import
time (`NODES = Table.model("nodes", NodeRecord)`) and passes them to `Store` methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack
from pydantic import BaseModel

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# LMDB keys are at most 511 bytes (MDB_MAXKEYSIZE in the default build).
MAX_KEY_BYTES = 511
_RESERVED_PREFIX = "__"


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]  # msgpack is untyped


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def _ident(raw: bytes) -> bytes:
    return bytes(raw)


@dataclass(frozen=True, slots=True)
class Table(Generic[T]):
    """A named LMDB sub-database whose values are `T`, encoded by `encode`/`decode`."""

    name: str
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64 or self.name.startswith(_RESERVED_PREFIX):
            raise ValueError(f"invalid table name {self.name!r}: 1..64 chars, not starting with '__'")

    @staticmethod
    def msgpack(name: str) -> Table[Any]:
        """Plain msgpack values (dicts, lists, numbers, str, bytes)."""
        return Table(name, _pack, _unpack)

    @staticmethod
    def raw(name: str) -> Table[bytes]:
        """Values stored as given: the caller owns the encoding."""
        return Table(name, _ident, _ident)

    @staticmethod
    def model(name: str, model: type[M]) -> Table[M]:
        """Pydantic models, stored as msgpack of `model_dump()`; decoded with validation."""

        def enc(value: M) -> bytes:
            return _pack(value.model_dump(mode="python"))

        def dec(raw: bytes) -> M:
            return model.model_validate(_unpack(raw))

        return Table(name, enc, dec)


def encode_key(key: str | bytes) -> bytes:
    """Keys are UTF-8 strings or raw bytes; both sort bytewise."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw or len(raw) > MAX_KEY_BYTES:
        raise ValueError(f"key must be 1..{MAX_KEY_BYTES} bytes, got {len(raw)}")
    return raw


__all__ = ["MAX_KEY_BYTES", "Table", "encode_key"]
