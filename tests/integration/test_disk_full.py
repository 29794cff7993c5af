"""Issue 18: a real daemon whose data dir fills up answers writes 507 "disk full under DATA_DIR",
keeps serving reads and status, takes writes again once space returns, and loses nothing across
a restart. The data dir sits on a small tmpfs the test mounts (root only; skipped elsewhere)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosd.client import Client
from aiosd.errors import ApiError
from tests.daemons import Daemon
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(180)
REC = "/v1/registry/clusters"


def call(d: Daemon, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
    async def go() -> Any:
        async with Client(d.socket, timeout_s=30) as c:
            if raw is not None:
                return await c.request(method, path, raw=raw, content_type="application/octet-stream")
            return await c.request(method, path, body)

    return asyncio.run(go())


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)], capture_output=True,
                       text=True, check=False)
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
                f.write(b"\0" * (256 << 10))
                f.flush()
        except OSError:
            pass


def test_disk_full_is_507_reads_served_writes_resume_nothing_lost(small_fs: Path, daemons: list[Daemon]) -> None:
    d = Daemon(small_fs, "n1").start()
    daemons.append(d)
    call(d, "PUT", f"{REC}/before", {"name": "before"})
    fill(small_fs / "fill")
    for attempt in range(3):
        with pytest.raises(ApiError) as e:
            call(d, "PUT", f"{REC}/during-{attempt}", {"name": "x" * 60_000})
        assert e.value.status == 507 and f"disk full under {d.data_dir}" in str(e.value), e.value
    with pytest.raises(ApiError) as e:
        call(d, "POST", "/v1/assets?uri=file:during", raw=b"y" * (4 << 20))
    assert e.value.status == 507 and "disk full under" in str(e.value)
    # Reads and status are still served.
    assert call(d, "GET", f"{REC}/before")["value"] == {"name": "before"}
    assert call(d, "GET", "/v1/status")["node_id"]
    logs = d.logs()
    assert "Traceback" not in logs and logs.count("resource exhausted") <= 2  # once per (reason) window
    (small_fs / "fill").unlink()
    wait_sync(lambda: call(d, "PUT", f"{REC}/after", {"name": "after"}), timeout_s=10, interval_s=0.2)
    asset = call(d, "POST", "/v1/assets?uri=file:after", raw=b"z" * (1 << 20))
    d.stop()
    d.start()
    assert call(d, "GET", f"{REC}/before")["value"] == {"name": "before"}
    assert call(d, "GET", f"{REC}/after")["value"] == {"name": "after"}
    for attempt in range(3):
        with pytest.raises(ApiError):
            call(d, "GET", f"{REC}/during-{attempt}")
    assert call(d, "GET", "/v1/assets/info?uri=file:after")["sha256"] == asset["sha256"]
