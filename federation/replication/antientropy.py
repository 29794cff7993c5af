"""Push-pull anti-entropy steps as pure functions over a RecordStore (no state, no IO).

initiator: digest_of(store)                      -> AeDigest
peer:      buckets_to_compare(store, AeDigest)   -> AeBuckets per table whose root differs
initiator: entries_to_send(store, AeBuckets)     -> AeEntries for every bucket that differs
peer:      reconcile(store, AeEntries)           -> records the initiator lacks + keys we want
The Replicator (gossip.py) sends what these return and merges what comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from federation.replication.digest import bucket_of, differing
from federation.replication.record import Record, record_hash
from federation.replication.store import RecordStore
from federation.replication.wire import AeBuckets, AeDigest, AeEntries, Entry, KeyRef, TableSum

# msgpack field names, the 16-byte hash, the HLC and framing of one Entry / KeyRef (measured
# with encode(): an Entry is ~58 B + key + origin, a KeyRef ~13 B + table + key; rounded up).
ENTRY_OVERHEAD_BYTES = 64
KEYREF_OVERHEAD_BYTES = 24


def digest_of(store: RecordStore) -> AeDigest:
    """Step 1: one summary per non-empty table."""
    sums = (store.summary(t) for t in store.tables())
    return AeDigest(tables=tuple(TableSum(table=s.table, count=s.count, root=s.root) for s in sums))


def buckets_to_compare(store: RecordStore, msg: AeDigest, empty_root: bytes) -> list[AeBuckets]:
    """Step 2: our bucket hashes of every table whose root differs (a missing table is empty)."""
    theirs = {s.table: s.root for s in msg.tables}
    return [
        AeBuckets(table=t, hashes=tuple(store.bucket_hashes(t)))
        for t in sorted(set(theirs) | set(store.tables()))
        if store.summary(t).root != theirs.get(t, empty_root)
    ]


def entries_to_send(
    store: RecordStore, msg: AeBuckets, budget: AeBudget, rng: random.Random
) -> list[AeEntries] | None:
    """Step 3: our entries of every bucket that differs, in as many messages as it takes.

    Each message holds at most `budget.entries_per_msg` entries and about `budget.msg_bytes`
    bytes; small buckets share a message, a bucket too big for one message is split into
    windows of its keys [start, end) that tile the key space, all sent in this round. A round
    lists at most `budget.entries_per_round` entries (memory and CPU of one round stay
    bounded): past it the buckets (and a big bucket's windows) start at a random place, so
    every part is compared in time. None when the peer's bucket count is not ours (a
    misconfigured or malicious peer).
    """
    if len(msg.hashes) != store.nbuckets:
        return None
    diff = differing(store.bucket_hashes(msg.table), list(msg.hashes))
    if not diff:
        return []
    k = rng.randrange(len(diff))
    out: list[AeEntries] = []
    left = budget.entries_per_round
    buckets: list[int] = []
    entries: list[Entry] = []
    size = 0

    def flush() -> None:
        nonlocal buckets, entries, size
        if buckets:
            out.append(AeEntries(table=msg.table, buckets=tuple(buckets), entries=tuple(entries)))
        buckets, entries, size = [], [], 0

    for b in diff[k:] + diff[:k]:
        if left <= 0:
            break
        recs = store.bucket(msg.table, b)
        sizes = [entry_size(r) for r in recs]
        total = sum(sizes)
        if len(recs) <= budget.entries_per_msg and total <= budget.msg_bytes:
            if len(entries) + len(recs) > budget.entries_per_msg or size + total > budget.msg_bytes:
                flush()
            buckets.append(b)
            entries.extend(entry_of(r) for r in recs)
            size += total
            left -= len(recs)
            continue
        flush()  # a big bucket goes alone, in windows
        cuts = _windows(sizes, budget.entries_per_msg, budget.msg_bytes)
        j0 = rng.randrange(len(cuts)) if len(recs) > left else 0
        for lo, hi in cuts[j0:] + cuts[:j0]:
            if left <= 0:
                break
            start = recs[lo].key if lo > 0 else None
            end = recs[hi].key if hi < len(recs) else None
            ents = tuple(entry_of(r) for r in recs[lo:hi])
            out.append(AeEntries(table=msg.table, buckets=(b,), start=start, end=end, entries=ents))
            left -= hi - lo
    flush()
    return out


def _windows(sizes: list[int], max_entries: int, max_bytes: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) index ranges, each within both caps (and never empty)."""
    cuts: list[tuple[int, int]] = []
    lo = 0
    while lo < len(sizes):
        hi, size = lo, 0
        while hi < len(sizes) and hi - lo < max_entries and (hi == lo or size + sizes[hi] <= max_bytes):
            size += sizes[hi]
            hi += 1
        cuts.append((lo, hi))
        lo = hi
    return cuts


def reconcile(store: RecordStore, msg: AeEntries) -> tuple[list[Record], list[KeyRef]] | None:
    """Step 4: records to send (the peer lacks them or holds older) and keys we want back.

    None when the message is inconsistent (a bucket out of range, an entry outside the listed
    buckets or window, a window over several buckets).
    """
    nb = store.nbuckets
    listed = set(msg.buckets)
    lo, hi = msg.start, msg.end
    windowed = lo is not None or hi is not None
    if any(b >= nb for b in listed) or any(bucket_of(e.key, nb) not in listed for e in msg.entries):
        return None
    if windowed and (len(msg.buckets) != 1 or any(not _in(e.key, lo, hi) for e in msg.entries)):
        return None
    theirs = {e.key: e for e in msg.entries}
    send: list[Record] = []
    want: list[KeyRef] = []
    for b in msg.buckets:
        for r in store.bucket(msg.table, b):
            if windowed and not _in(r.key, lo, hi):
                continue  # not covered by this message
            e = theirs.pop(r.key, None)
            if e is None:
                send.append(r)
                continue
            if e.h == record_hash(r)[:16]:
                continue
            mine = (r.version.hlc, r.version.origin, r.tombstone)
            other = (e.hlc, e.origin, e.tombstone)
            if other >= mine:  # equal versions with different values: exchange both ways
                want.append(KeyRef(table=msg.table, key=r.key))
            if other <= mine:
                send.append(r)
    want.extend(KeyRef(table=msg.table, key=k) for k in theirs)  # keys we lack
    return send, want


@dataclass(frozen=True, slots=True)
class AeBudget:
    """Caps of one anti-entropy round and of each of its messages."""

    entries_per_msg: int
    msg_bytes: int
    entries_per_round: int


def entry_size(r: Record) -> int:
    """About the encoded size of `entry_of(r)` in bytes (msgpack map with its field names)."""
    return ENTRY_OVERHEAD_BYTES + len(r.key) + len(r.version.origin)


def keyref_size(k: KeyRef) -> int:
    """About the encoded size of a KeyRef in bytes."""
    return KEYREF_OVERHEAD_BYTES + len(k.table) + len(k.key)


def entry_of(r: Record) -> Entry:
    """What anti-entropy tells a peer about one record."""
    v = r.version
    return Entry(key=r.key, hlc=v.hlc, origin=v.origin, tombstone=r.tombstone, h=record_hash(r)[:16])


def _in(key: str, start: str | None, end: str | None) -> bool:
    return (start is None or key >= start) and (end is None or key < end)


__all__ = [
    "AeBudget",
    "buckets_to_compare",
    "digest_of",
    "entries_to_send",
    "entry_of",
    "entry_size",
    "keyref_size",
    "reconcile",
]
