"""The pure parts of the bounded edges: rejections logged once per (reason, source) window and
counted; connection caps per source; resource exhaustion mapped to 507/503."""

from __future__ import annotations

import errno
from pathlib import Path

from aiosd.api.server import exhausted
from federation.edge import RejectionLog, SourceCaps
from storage import DiskFullError, OutOfFilesError


def test_rejections_log_once_per_reason_and_source_window_and_count_all() -> None:
    r = RejectionLog(window_s=60.0, max_keys=3)
    assert r.reject("nul_header", "10.0.0.1", 0.0)
    assert not any(r.reject("nul_header", "10.0.0.1", t) for t in range(1, 60))
    assert r.reject("nul_header", "10.0.0.2", 1.0) and r.reject("slow_headers", "10.0.0.1", 1.0)
    assert r.reject("nul_header", "10.0.0.1", 60.0)  # next window
    assert r.counts == {"nul_header": 62, "slow_headers": 1}
    for i in range(100):  # memory stays bounded whatever the number of sources
        r.reject("x", f"s{i}", 61.0)
    assert len(r._last) == 3


def test_source_caps_bound_each_source_and_the_total() -> None:
    c = SourceCaps(per_source=2, total=3)
    assert c.admit("a") is None and c.admit("a") is None
    assert c.admit("a") == "per_source_cap"
    assert c.admit("b") is None and c.admit("c") == "total_cap"
    c.release("a")
    assert c.admit("c") is None and c.open == 3


def test_exhaustion_maps_to_507_and_503_and_nothing_else(tmp_path: Path) -> None:
    for e in (DiskFullError("no room"), OSError(errno.ENOSPC, "No space left on device")):
        status, code, msg = exhausted(e, tmp_path) or (0, "", "")
        assert status == 507 and code == "disk_full" and f"disk full under {tmp_path}" in msg
    try:
        try:
            raise OSError(errno.EMFILE, "Too many open files")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert (exhausted(outer, tmp_path) or (0,))[0] == 503
    assert (exhausted(OutOfFilesError("x"), tmp_path) or (0,))[0] == 503
    assert exhausted(ValueError("bug"), tmp_path) is None
    assert exhausted(OSError(errno.ENOENT, "gone"), tmp_path) is None
