"""storage.Store vs raw `lmdb` + msgpack in the same process, same run, same disk.

Prints ops/s for each and the overhead ratio (raw ops/s / ours; 1.0 = no overhead).
Targets (issue #2): batched put <= 1.3, single put <= 1.5.
Run: .venv/bin/python bench/storage_ops.py [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storage import Store, Table

T = Table.msgpack("bench")
VALUE = {"name": "x" * 64, "size": 12345, "tags": ["a", "b", "c"], "blob": b"\x00" * 800}  # ~1 KB


def rate(fn: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def compare(raw: Callable[[], int], ours: Callable[[], int], rounds: int = 3) -> tuple[float, float]:
    """Best-of-`rounds` ops/s for each, alternating so disk and CPU noise hit both alike."""
    r, o = [], []
    for _ in range(rounds):
        r.append(rate(raw))
        o.append(rate(ours))
    return max(r), max(o)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="records per single-put run (each one fsync)")
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aiosd-bench-"))
    store = Store.open(root / "ours")
    env = lmdb.open(str(root / "raw"), map_size=64 << 20, max_dbs=128, sync=True, readahead=False)
    db = env.open_db(b"bench")
    keys = [f"key/{i:08d}" for i in range(args.n)]
    bkeys = [k.encode() for k in keys]
    rows: list[tuple[str, float, float]] = []

    def ours_single() -> int:
        for k in keys:
            store.put(T, k, VALUE)
        return len(keys)

    def raw_single() -> int:
        for k in bkeys:
            with env.begin(write=True, db=db) as txn:
                txn.put(k, msgpack.packb(VALUE, use_bin_type=True))
        return len(bkeys)

    rows.append(("put, 1 per txn (fsync each)", *compare(raw_single, ours_single)))

    def ours_batch() -> int:
        n = 0
        for start in range(0, args.n * 5, args.batch):
            with store.batch() as b:
                for i in range(start, start + args.batch):
                    b.put(T, f"b/{i:08d}", VALUE)
            n += args.batch
        return n

    def raw_batch() -> int:
        n = 0
        for start in range(0, args.n * 5, args.batch):
            with env.begin(write=True, db=db) as txn:
                for i in range(start, start + args.batch):
                    txn.put(f"b/{i:08d}".encode(), msgpack.packb(VALUE, use_bin_type=True))
            n += args.batch
        return n

    rows.append((f"put, batched {args.batch} per txn", *compare(raw_batch, ours_batch)))

    def ours_get() -> int:
        for k in keys:
            store.get(T, k)
        return len(keys)

    def raw_get() -> int:
        for k in bkeys:
            with env.begin(db=db) as txn:
                msgpack.unpackb(txn.get(k), raw=False)
        return len(bkeys)

    rows.append(("get, 1 per txn", *compare(raw_get, ours_get)))

    def ours_scan() -> int:
        return len(store.scan(T, "b/0000"))

    def raw_scan() -> int:
        out = []
        with env.begin(db=db) as txn:
            cur = txn.cursor()
            cur.set_range(b"b/0000")
            for k, v in cur:
                if not k.startswith(b"b/0000"):
                    break
                out.append((bytes(k), msgpack.unpackb(v, raw=False)))
        return len(out)

    rows.append(("prefix scan (records/s)", *compare(raw_scan, ours_scan)))

    print(f"{'operation':34} {'raw lmdb/s':>12} {'aiosd/s':>12} {'overhead':>9}")
    for name, raw, ours in rows:
        print(f"{name:34} {raw:12,.0f} {ours:12,.0f} {raw / ours:9.2f}")
    ratios = [raw / ours for _, raw, ours in rows]
    print(f"median overhead ratio: {statistics.median(ratios):.2f}")
    store.close()
    env.close()


if __name__ == "__main__":
    main()
