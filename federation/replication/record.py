"""Replicated records: version, canonical signed bytes, and batch signatures (Merkle roots).

An origin signs one Merkle root over a batch of its records; every record carries its own
inclusion proof (leaf index + sibling path + the root signature), so any third party can
forward any subset and every receiver still checks the origin's signature. One ed25519 verify
per batch (cached by root) replaces one per record. Merge rules live in merge.py.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from pydantic import Field

from federation.sansio import NodeId
from federation.strict import Wire

# Table names are identifiers (they become LMDB sub-database names elsewhere).
TABLE_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# Keys are at most 256 chars: table + key must fit LMDB's 511-byte key limit in UTF-8 worst case
# only for ASCII keys; registries use ASCII ids. Longer keys are refused at write and on the wire.
MAX_KEY_CHARS = 256
# Hard wire cap on one value; the configured cap (ReplicationConfig.max_value_bytes) is lower.
MAX_VALUE_BYTES_WIRE = 1 << 20
# 2**16 records per signed batch at most: a proof path is never longer than 16 hashes.
MAX_PROOF_DEPTH = 16
HASH_BYTES = 32
SIGNATURE_BYTES = 64

_RECORD_DOMAIN = "aiosd.repl.record/1"
_ROOT_DOMAIN = b"aiosd.repl.root/1\x00"
# RFC 6962 §2.1 style prefixes keep leaves and inner nodes apart (no second preimages).
_LEAF = b"\x00"
_INNER = b"\x01"
_PAD = hashlib.sha256(b"\x02aiosd.repl.pad").digest()

TableName = Annotated[str, Field(pattern=TABLE_PATTERN)]
RecordKey = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]
NodeIdField = Annotated[str, Field(min_length=1, max_length=64)]
Hash32 = Annotated[bytes, Field(min_length=HASH_BYTES, max_length=HASH_BYTES)]

Signer = Callable[[bytes], bytes]
"""Signs bytes with this node's key (ed25519 in the daemon)."""

Verifier = Callable[[NodeId, bytes, bytes], bool]
"""(origin, message, signature) -> True when `origin`'s key signed `message`; never raises.

An unknown origin (no certificate known) must answer False: that is a forged origin."""


class Version(Wire):
    """(hybrid logical clock, origin): totally ordered, hlc first."""

    hlc: int = Field(ge=0, lt=1 << 64)
    origin: NodeIdField


class Proof(Wire):
    """Inclusion of one record in a batch whose Merkle root the origin signed."""

    index: int = Field(ge=0, lt=1 << MAX_PROOF_DEPTH)
    path: tuple[Hash32, ...] = Field(max_length=MAX_PROOF_DEPTH)
    sig: Annotated[bytes, Field(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)]


class Record(Wire):
    """One replicated `(table, key) -> value` with its version, tombstone flag and signature.

    `value` is opaque bytes (callers msgpack-encode); a tombstone has an empty value.
    """

    table: TableName
    key: RecordKey
    value: bytes = Field(max_length=MAX_VALUE_BYTES_WIRE)
    version: Version
    tombstone: bool
    proof: Proof


@dataclass(frozen=True, slots=True)
class Draft:
    """A record before signing (what a local write produces)."""

    table: str
    key: str
    value: bytes
    version: Version
    tombstone: bool


def canonical_bytes(table: str, key: str, value: bytes, hlc: int, origin: str, tombstone: bool) -> bytes:
    """The exact bytes a record's leaf hash covers (domain-separated, fixed field order)."""
    out: bytes = msgpack.packb([_RECORD_DOMAIN, table, key, value, hlc, origin, tombstone], use_bin_type=True)
    return out


def leaf_hash(table: str, key: str, value: bytes, hlc: int, origin: str, tombstone: bool) -> bytes:
    """sha256 leaf hash of a record's canonical bytes (also its identity in digests)."""
    return hashlib.sha256(_LEAF + canonical_bytes(table, key, value, hlc, origin, tombstone)).digest()


def record_hash(r: Record | Draft) -> bytes:
    """Leaf hash of a record: covers every field except the proof."""
    v = r.version
    return leaf_hash(r.table, r.key, r.value, v.hlc, v.origin, r.tombstone)


def root_message(root: bytes) -> bytes:
    """What the origin's key signs for a batch."""
    return _ROOT_DOMAIN + root


def _inner(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_INNER + left + right).digest()


def merkle_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[tuple[bytes, ...]]]:
    """Root over `leaves` (padded to a power of two) and each leaf's sibling path, bottom up."""
    n = len(leaves)
    if n == 0:
        raise ValueError("leaves: must not be empty")
    if n > 1 << MAX_PROOF_DEPTH:
        raise ValueError(f"leaves: at most {1 << MAX_PROOF_DEPTH} per batch, got {n}")
    width = 1
    while width < n:
        width *= 2
    level = list(leaves) + [_PAD] * (width - n)
    paths: list[list[bytes]] = [[] for _ in range(n)]
    idx = list(range(n))
    while len(level) > 1:
        for i in range(n):
            paths[i].append(level[idx[i] ^ 1])
            idx[i] >>= 1
        level = [_inner(level[j], level[j + 1]) for j in range(0, len(level), 2)]
    return level[0], [tuple(p) for p in paths]


def proof_root(leaf: bytes, proof: Proof) -> bytes:
    """The root that `proof` leads to from `leaf` (equal to the signed root iff included)."""
    h = leaf
    i = proof.index
    for sib in proof.path:
        h = _inner(sib, h) if i & 1 else _inner(h, sib)
        i >>= 1
    return h


def group_root(items: Sequence[tuple[bytes, Proof]]) -> bytes | None:
    """The root that several (leaf, proof) pairs of one tree all lead to, hashing each node once.

    None when they do not agree on one tree (different depths, or two values claimed for one
    node); then each proof must be checked alone. When a root is returned, every single
    proof_root(leaf, proof) equals it: each step of each path uses the one value of its node.
    """
    if not items:
        return None
    depth = len(items[0][1].path)
    nodes: dict[int, bytes] = {}  # on-path nodes of the current level, by index
    for leaf, p in items:
        if len(p.path) != depth or p.index >> depth or nodes.setdefault(p.index, leaf) != leaf:
            return None
    for level in range(depth):
        known = dict(nodes)
        for _, p in items:
            sib = (p.index >> level) ^ 1
            if known.setdefault(sib, p.path[level]) != p.path[level]:
                return None
        nodes = {}
        for idx in {i >> 1 for i in known if (i ^ 1) in known}:
            nodes[idx] = _inner(known[2 * idx], known[2 * idx + 1])
    return nodes.get(0)


def sign_batch(drafts: Sequence[Draft], signer: Signer) -> list[Record]:
    """Sign drafts (all of one origin) with one signature over their Merkle root."""
    origins = {d.version.origin for d in drafts}
    if len(origins) > 1:
        raise ValueError("drafts: all records of a batch must have the same origin")
    leaves = [record_hash(d) for d in drafts]
    root, paths = merkle_paths(leaves)
    sig = signer(root_message(root))
    return [
        Record(
            table=d.table,
            key=d.key,
            value=d.value,
            version=d.version,
            tombstone=d.tombstone,
            proof=Proof(index=i, path=paths[i], sig=sig),
        )
        for i, d in enumerate(drafts)
    ]


class RootCache:
    """Bounded cache of verified (origin, root, signature) triples; FIFO eviction.

    Only successful verifications are cached, so a peer cannot poison it; the cap bounds memory
    whatever peers send (4096 x ~130 B). One entry serves every record of a batch.
    """

    def __init__(self, verifier: Verifier, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries: must be >= 1")
        self._verifier = verifier
        self._max = max_entries
        self._ok: OrderedDict[tuple[str, bytes, bytes], None] = OrderedDict()
        self.verifications = 0
        self.hits = 0

    def check(self, origin: NodeId, root: bytes, sig: bytes) -> bool:
        """True when `origin` signed `root` (answered from the cache when seen before)."""
        k = (origin, root, sig)
        if k in self._ok:
            self.hits += 1
            return True
        self.verifications += 1
        if not self._verifier(origin, root_message(root), sig):
            return False
        self._ok[k] = None
        if len(self._ok) > self._max:
            self._ok.popitem(last=False)
        return True

    def check_group(self, origin: NodeId, sig: bytes, items: Sequence[tuple[bytes, Proof]]) -> bool:
        """True when every (leaf, proof) is in one tree whose root `origin` signed with `sig`.

        False says only "not all of them": check each alone to find the bad ones."""
        root = group_root(items)
        return root is not None and self.check(origin, root, sig)

    def __len__(self) -> int:
        return len(self._ok)


def verify_record(r: Record, roots: RootCache) -> bool:
    """True when the record's proof leads to a root that its origin signed."""
    return roots.check(NodeId(r.version.origin), proof_root(record_hash(r), r.proof), r.proof.sig)


def wire_size(r: Record) -> int:
    """Approximate encoded size in bytes (for message budgets; exact to within ~16 bytes)."""
    return 150 + len(r.table) + len(r.key) + len(r.value) + len(r.version.origin) + 34 * len(r.proof.path)


__all__ = [
    "MAX_KEY_CHARS",
    "MAX_PROOF_DEPTH",
    "TABLE_PATTERN",
    "Draft",
    "Proof",
    "Record",
    "RootCache",
    "Signer",
    "Verifier",
    "Version",
    "canonical_bytes",
    "group_root",
    "leaf_hash",
    "merkle_paths",
    "proof_root",
    "record_hash",
    "root_message",
    "sign_batch",
    "verify_record",
    "wire_size",
]
