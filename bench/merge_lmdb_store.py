"""Merge throughput into the daemon's LMDB RecordStore (federation/replication/lmdb_store.py).

Same workload as bench/merge.py (AeRecords chunks of 1,024, real ed25519 via PyNaCl, 8 origins),
but into `LmdbRecordStore` on `storage.Store` (one write transaction + fsync per chunk).
Run: .venv/bin/python bench/merge_lmdb_store.py [--records 20000]
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from federation.replication.lmdb_store import LmdbRecordStore  # after sys.path
from storage import Store

_spec = importlib.util.spec_from_file_location("bench_merge", pathlib.Path(__file__).with_name("merge.py"))
assert _spec is not None and _spec.loader is not None
merge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    n = ap.parse_args().records
    print(f"# best of {merge.REPEAT}; {n} records of 200 B, {merge.ORIGINS} origins, real ed25519, 1 core")
    for batch in (1024, 64):
        recs, vks = merge.make_records(n, batch)
        best = 0.0
        for _ in range(merge.REPEAT):
            with tempfile.TemporaryDirectory() as d:
                st = Store.open(pathlib.Path(d))
                best = max(best, merge.merge_rate(recs, LmdbRecordStore(st, 64), vks))
                st.close()
        print(f"{f'merge -> LmdbRecordStore (storage.Store), signed batches of {batch}':<64} {best:>10,.0f} /s")


if __name__ == "__main__":
    main()
