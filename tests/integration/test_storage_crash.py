"""Durability: records acknowledged before a `kill -9` are all there after reopening."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage import Store, Table

T = Table.msgpack("acks")

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from storage import Store, Table
    T = Table.msgpack("acks")
    store = Store.open(Path(sys.argv[1]))
    batched = sys.argv[2] == "batch"
    i = 0
    while True:
        if batched:
            with store.batch() as b:
                for j in range(50):
                    b.put(T, f"{i:08d}-{j:02d}", {"i": i, "j": j})
        else:
            store.put(T, f"{i:08d}", {"i": i})
        print(i, flush=True)   # the acknowledgement: only after put/batch returned
        i += 1
""")


@pytest.mark.parametrize("mode", ["single", "batch"])
def test_acknowledged_writes_survive_kill_9(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), mode], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    acked = -1
    try:
        for line in proc.stdout:  # bounded: we kill after 400 acknowledgements
            acked = int(line)
            if acked >= 400:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert acked >= 400
    with Store.open(db) as store:
        if mode == "single":
            for i in range(acked + 1):
                assert store.get(T, f"{i:08d}") == {"i": i}, f"acknowledged record {i} lost"
        else:
            for i in range(acked + 1):
                assert len(store.scan(T, f"{i:08d}-")) == 50, f"acknowledged batch {i} lost or torn"
            # a batch is all-or-nothing, even the one in flight when the process died
            assert store.count(T) % 50 == 0
