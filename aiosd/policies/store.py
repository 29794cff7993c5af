"""Policy records: build (from an archive + manifest), sign, verify, and keep them in LMDB.

A record names its archive by sha256 (the blob lives in `storage.blobs`) and is signed by its
publisher's node key over every field but the signature. `RecordBook` is the one small class
that holds records (policies, templates, specs) with an in-memory index, so the move to the
gossip-replicated registry replaces one class, not its callers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from aiosd.policies.archive import ArchiveContents
from aiosd.policies.errors import PolicyArchiveError, PolicyConfigError
from aiosd.specs.base import MAX_NAME_LEN, POLICY_URI_RE
from aiosd.specs.errors import Problem, SpecError, join_path
from aiosd.specs.protocol import check_value, parse_protocol
from federation.identity import node_id_of, verify_signature
from storage import Store, Table

SIGNING_DOMAIN = b"aiosd-policy-record-v1\n"
# Why 10,000: records are kept in memory for synchronous catalog lookups; a network publishes
# dozens of policies, not millions. A push past the cap is refused, never an eviction.
MAX_RECORDS = 10_000

M = TypeVar("M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MgmtCommand(_Model):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")


class PolicyRecord(_Model):
    """AIOS PolicyRule, our names: what a policy is, where its code is, who published it."""

    uri: str
    name: str
    version: str
    release_tag: str = ""
    type: str = "python_class_v1"
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    archive_sha256: str
    archive_size: int
    has_requirements: bool = False
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    settings_schema: dict[str, Any] = Field(default_factory=dict)
    parameters_schema: dict[str, Any] = Field(default_factory=dict)
    management_commands: list[MgmtCommand] = Field(default_factory=list)
    default_settings: dict[str, Any] = Field(default_factory=dict)
    default_parameters: dict[str, Any] = Field(default_factory=dict)
    publisher: str
    publisher_key: str  # hex ed25519 public key; node_id_of(it) == publisher
    published_at: float
    signature: str = ""
    _schemas: CompiledSchemas | None = PrivateAttr(default=None)

    def signing_bytes(self) -> bytes:
        body = self.model_dump(mode="json", by_alias=True, exclude={"signature"})
        return SIGNING_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    # ----- PolicyInfo (aiosd.specs.resolve) ------------------------------------------------
    def check_config(self, parameters: Mapping[str, Any], settings: Mapping[str, Any], path: str) -> list[Problem]:
        protos = compiled(self)
        out = check_value(protos.parameters, dict(parameters), join_path(path, "parameters"))
        out += check_value(protos.settings, dict(settings), join_path(path, "settings"))
        return out


class Signer(Protocol):
    @property
    def public_bytes(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class CompiledSchemas:
    __slots__ = ("input", "output", "parameters", "settings")

    def __init__(self, rec: PolicyRecord) -> None:
        self.input = parse_protocol(rec.input_schema, "input_schema")
        self.output = parse_protocol(rec.output_schema, "output_schema")
        self.parameters = parse_protocol(rec.parameters_schema, "parameters_schema")
        self.settings = parse_protocol(rec.settings_schema, "settings_schema")


def compiled(rec: PolicyRecord) -> CompiledSchemas:
    """The record's schemas, compiled once per record object."""
    found = rec._schemas  # the record's own cache
    if found is None:
        found = CompiledSchemas(rec)
        rec._schemas = found
    return found


def split_uri(uri: str) -> tuple[str, str, str]:
    """`name:version-tag` -> (name, version, tag); the tag may be empty.

    Raises: PolicyArchiveError(uri) when malformed.
    """
    if not isinstance(uri, str) or len(uri) > MAX_NAME_LEN or not POLICY_URI_RE.match(uri):
        raise PolicyArchiveError("uri", f"must look like name:version-tag (e.g. policy.loadBalancer.mine:v1-stable), "
                                 f"got {str(uri)[:80]!r}")
    name, rest = uri.split(":", 1)
    version, _, tag = rest.partition("-")
    return name, version, tag


_MANIFEST_KEYS = {
    "description", "tags", "input_schema", "output_schema", "settings_schema", "parameters_schema",
    "management_commands", "settings", "parameters", "policy_input_schema", "policy_output_schema",
    "policy_settings_schema", "policy_parameters_schema", "management_commands_schema", "policy_settings",
    "policy_parameters", "name", "version", "release_tag", "type", "metadata",
}


def build_record(uri: str, sha: str, size: int, contents: ArchiveContents, signer: Signer, *,
                 description: str | None = None, tags: Sequence[str] | None = None,
                 now: float | None = None) -> PolicyRecord:
    """A signed record for an archive, its manifest (`policy.json`, AIOS key names accepted) and flags.

    Raises:
        PolicyArchiveError: a malformed URI or manifest field (path named).
        SpecError: a schema in the manifest is not valid protocol mini-language.
        PolicyConfigError: the default settings/parameters break their own schemas.
    """
    name, version, tag = split_uri(uri)
    man = contents.manifest()
    unknown = sorted(set(man) - _MANIFEST_KEYS)
    if unknown:
        raise PolicyArchiveError(f"policy.json.{unknown[0]}", f"is not a manifest key (known: {', '.join(sorted(_MANIFEST_KEYS))})")

    def pick(*keys: str) -> Any:
        for k in keys:
            if k in man:
                return man[k]
        return None

    raw_tags = tags if tags is not None else pick("tags") or []
    if isinstance(raw_tags, str):
        raw_tags = [t.strip() for t in raw_tags.split(",") if t.strip()]
    key = signer.public_bytes
    fields: dict[str, Any] = {
        "uri": uri, "name": name, "version": version, "release_tag": tag,
        "description": description if description is not None else pick("description") or "",
        "tags": raw_tags, "archive_sha256": sha, "archive_size": size,
        "has_requirements": bool(contents.requirements),
        "input_schema": pick("input_schema", "policy_input_schema") or {},
        "output_schema": pick("output_schema", "policy_output_schema") or {},
        "settings_schema": pick("settings_schema", "policy_settings_schema") or {},
        "parameters_schema": pick("parameters_schema", "policy_parameters_schema") or {},
        "management_commands": pick("management_commands", "management_commands_schema") or [],
        "default_settings": pick("settings", "policy_settings") or {},
        "default_parameters": pick("parameters", "policy_parameters") or {},
        "publisher": str(node_id_of(key)), "publisher_key": key.hex(),
        "published_at": time.time() if now is None else now,
    }
    try:
        rec = PolicyRecord.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        path = "policy.json." + ".".join(str(p) for p in err["loc"])
        raise PolicyArchiveError(path, err["msg"]) from None
    schemas = CompiledSchemas(rec)  # raises SpecError naming the bad schema field
    problems = check_value(schemas.parameters, rec.default_parameters, "policy.json.parameters")
    problems += check_value(schemas.settings, rec.default_settings, "policy.json.settings")
    if problems:
        raise PolicyConfigError(uri, problems)
    return rec.model_copy(update={"signature": signer.sign(rec.signing_bytes()).hex()})


def verify_record(rec: PolicyRecord, archive: bytes | None = None) -> None:
    """Check the publisher's signature (and the archive's hash when given).

    Raises: PolicyArchiveError saying which check failed.
    """
    try:
        key = bytes.fromhex(rec.publisher_key)
        sig = bytes.fromhex(rec.signature)
    except ValueError:
        raise PolicyArchiveError("signature", f"policy {rec.uri}: publisher key or signature is not hex") from None
    if str(node_id_of(key)) != rec.publisher:
        raise PolicyArchiveError("publisher", f"policy {rec.uri}: publisher {rec.publisher} does not own its key")
    if not verify_signature(key, rec.signing_bytes(), sig):
        raise PolicyArchiveError("signature", f"policy {rec.uri}: the record's signature does not verify "
                                 "(changed after publishing)")
    if archive is not None:
        import hashlib

        if hashlib.sha256(archive).hexdigest() != rec.archive_sha256:
            raise PolicyArchiveError("archive_sha256", f"policy {rec.uri}: the archive does not match its hash")


class Book(Protocol[M]):
    """Where records of one kind live: RecordBook (this node's LMDB) or ReplicatedBook (the network)."""

    async def load(self) -> None: ...

    def get(self, key: str) -> M | None: ...

    def all(self) -> list[M]: ...

    def __len__(self) -> int: ...

    def subscribe(self, cb: Callable[[str, M | None], None]) -> None: ...

    async def put(self, rec: M) -> None: ...

    async def delete(self, key: str) -> bool: ...


class IndexedRecords(Generic[M]):
    """The in-memory side every book shares: records by key, and callbacks on every change."""

    def __init__(self) -> None:
        self._index: dict[str, M] = {}
        self._subscribers: list[Callable[[str, M | None], None]] = []

    def get(self, key: str) -> M | None:
        return self._index.get(key)

    def all(self) -> list[M]:
        return [self._index[k] for k in sorted(self._index)]

    def __len__(self) -> int:
        return len(self._index)

    def subscribe(self, cb: Callable[[str, M | None], None]) -> None:
        self._subscribers.append(cb)

    def _check_room(self, key: str, where: str) -> None:
        if key not in self._index and len(self._index) >= MAX_RECORDS:
            raise SpecError.at("uri", f"{where} already holds {MAX_RECORDS} records of this kind")

    def _set(self, key: str, rec: M | None) -> None:
        """Index `rec` under `key` (None: remove it) and tell the subscribers, when it changed."""
        if rec is None:
            if self._index.pop(key, None) is None:
                return
        elif self._index.get(key) == rec:
            return
        else:
            self._index[key] = rec
        for cb in self._subscribers:
            cb(key, rec)


class RecordBook(IndexedRecords[M]):
    """Records of one kind in one LMDB table of this node."""

    def __init__(self, store: Store, table: str, model: type[M], key: Callable[[M], str]) -> None:
        super().__init__()
        self._store = store
        self._table: Table[Any] = Table.msgpack(table)
        self._model = model
        self._key = key

    async def load(self) -> None:
        rows = await asyncio.to_thread(self._store.scan, self._table)
        for k, raw in rows:
            try:
                self._index[k.decode()] = self._model.model_validate(raw)
            except ValidationError:
                continue  # a record from a newer schema: skip, keep serving the rest

    def key_of(self, rec: M) -> str:
        return self._key(rec)

    async def put(self, rec: M) -> None:
        key = self._key(rec)
        self._check_room(key, "this node")
        await asyncio.to_thread(self._store.put, self._table, key, rec.model_dump(mode="json", by_alias=True))
        self._set(key, rec)

    async def delete(self, key: str) -> bool:
        gone = await asyncio.to_thread(self._store.delete, self._table, key)
        self._set(key, None)
        return bool(gone)

__all__ = [
    "MAX_RECORDS",
    "Book",
    "CompiledSchemas",
    "IndexedRecords",
    "MgmtCommand",
    "PolicyRecord",
    "RecordBook",
    "Signer",
    "build_record",
    "compiled",
    "split_uri",
    "verify_record",
]
