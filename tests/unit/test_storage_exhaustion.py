"""Issue 18: a store that finds no room says so (DiskFullError), keeps serving reads, and takes
writes again once room returns: at its map limit, and on a full filesystem (a small tmpfs)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import DiskFullError, Store, Table

T = Table.raw("t")


def test_map_limit_is_a_disk_full_error_and_reads_still_work(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", map_bytes=1 << 20, max_map_bytes=4 << 20) as s:
        s.put(T, "first", b"kept")
        with pytest.raises(DiskFullError) as e:
            for i in range(100):
                s.put(T, f"k{i}", os.urandom(256 << 10))
        assert "map limit" in str(e.value) and str(tmp_path) in str(e.value)
        assert s.get(T, "first") == b"kept"
        s.delete(T, "k0")  # deleting frees pages: a small write fits again
        s.put(T, "after", b"ok")
    with Store.open(tmp_path / "db", map_bytes=1 << 20, max_map_bytes=4 << 20) as s:
        assert s.get(T, "first") == b"kept" and s.get(T, "after") == b"ok"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError:
            pass


def test_full_filesystem_is_a_disk_full_error_then_writes_resume(small_fs: Path) -> None:
    with Store.open(small_fs / "db", map_bytes=1 << 20) as s:
        s.put(T, "first", b"kept")
        fill(small_fs / "fill")
        with pytest.raises(DiskFullError) as e:
            s.put(T, "big", os.urandom(512 << 10))
        assert "disk full under" in str(e.value) and str(small_fs) in str(e.value)
        assert s.get(T, "first") == b"kept" and s.get(T, "big") is None
        (small_fs / "fill").unlink()
        s.put(T, "big", b"x" * (512 << 10))
    with Store.open(small_fs / "db", map_bytes=1 << 20) as s:
        assert s.get(T, "first") == b"kept" and s.get(T, "big") == b"x" * (512 << 10)
