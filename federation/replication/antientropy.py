"""Push-pull anti-entropy steps as pure functions over a RecordStore (no state, no IO).

initiator: digest_of(store)                      -> AeDigest
peer:      buckets_to_compare(store, AeDigest)   -> AeBuckets per table whose root differs
initiator: entries_to_send(store, AeBuckets)     -> AeEntries for the buckets that differ
peer:      reconcile(store, AeEntries)           -> records the initiator lacks + keys we want
The Replicator (gossip.py) sends what these return and merges what comes back.
"""

from __future__ import annotations

import math
import random

from federation.replication.digest import bucket_of, differing
from federation.replication.record import Record, record_hash
from federation.replication.store import RecordStore
from federation.replication.wire import AeBuckets, AeDigest, AeEntries, Entry, KeyRef, TableSum


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
    store: RecordStore, msg: AeBuckets, cap: int, rng: random.Random
) -> list[AeEntries] | None:
    """Step 3: our entries of the buckets that differ, at most `cap` per message.

    A bucket bigger than `cap` is sent alone, one window of its keys chosen at random as
    [start, end): the windows tile the key space, so each is compared in time. None when the
    peer's bucket count is not ours (a misconfigured or malicious peer).
    """
    if len(msg.hashes) != store.nbuckets:
        return None
    out: list[AeEntries] = []
    buckets: list[int] = []
    entries: list[Entry] = []
    for b in differing(store.bucket_hashes(msg.table), list(msg.hashes)):
        recs = store.bucket(msg.table, b)
        if buckets and len(entries) + len(recs) > cap:
            out.append(AeEntries(table=msg.table, buckets=tuple(buckets), entries=tuple(entries)))
            buckets, entries = [], []
        if len(recs) > cap:
            j = rng.randrange(math.ceil(len(recs) / cap))
            window = recs[j * cap : (j + 1) * cap]
            start = window[0].key if j > 0 else None
            end = recs[(j + 1) * cap].key if (j + 1) * cap < len(recs) else None
            ents = tuple(entry_of(r) for r in window)
            out.append(AeEntries(table=msg.table, buckets=(b,), start=start, end=end, entries=ents))
            continue
        buckets.append(b)
        entries.extend(entry_of(r) for r in recs)
    if buckets:
        out.append(AeEntries(table=msg.table, buckets=tuple(buckets), entries=tuple(entries)))
    return out


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


def entry_of(r: Record) -> Entry:
    """What anti-entropy tells a peer about one record."""
    v = r.version
    return Entry(key=r.key, hlc=v.hlc, origin=v.origin, tombstone=r.tombstone, h=record_hash(r)[:16])


def _in(key: str, start: str | None, end: str | None) -> bool:
    return (start is None or key >= start) and (end is None or key < end)


__all__ = ["buckets_to_compare", "digest_of", "entries_to_send", "entry_of", "reconcile"]
