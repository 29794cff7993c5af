"""`aiosd top` in a real terminal (tmux): it renders the live table and exits cleanly on q and Ctrl-C."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon
from tests.waiting import wait_sync

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    base = ["tmux", "-L", f"aiosd-top-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    yield base
    subprocess.run([*base, "kill-server"], check=False, capture_output=True, timeout=10)


def _pane(tmux: list[str]) -> str:
    return subprocess.run([*tmux, "capture-pane", "-p", "-t", "top"], check=False, capture_output=True,
                          text=True, timeout=10).stdout


@pytest.mark.parametrize("key", ["q", "C-c"])
def test_top_renders_and_quits(tmp_path: Path, daemons: list[Daemon], tmux: list[str], key: str) -> None:
    d = Daemon(tmp_path, "n1", env={"AIOSD_METRICS_INTERVAL_S": "0.5"}).start()
    daemons.append(d)
    me = d.json("status")["node_id"]
    rc_file = tmp_path / "rc"
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "aiosd.cli", "top", "--interval", "0.3",
                                             "--socket", str(d.socket), "--data-dir", str(d.data_dir)])
    stty = tmp_path / "stty"
    shell = f"{cmd}; echo $? > {shlex.quote(str(rc_file))}; stty -a > {shlex.quote(str(stty))}; sleep 30"
    subprocess.run([*tmux, "new-session", "-d", "-s", "top", "-x", "120", "-y", "30", shell], check=True, timeout=10)
    wait_sync(lambda: "LOAD15" in _pane(tmux) and me in _pane(tmux), timeout_s=20, interval_s=0.1)
    assert "q quits" in _pane(tmux)
    subprocess.run([*tmux, "send-keys", "-t", "top", key], check=True, timeout=10)
    wait_sync(lambda: rc_file.exists() and rc_file.read_text().strip() != "", timeout_s=10, interval_s=0.1)
    assert rc_file.read_text().strip() == "0"
    assert "Traceback" not in _pane(tmux)
    # The terminal was restored: canonical mode and echo are back on.
    wait_sync(lambda: stty.exists() and "icanon" in stty.read_text(), timeout_s=10, interval_s=0.1)
    modes = stty.read_text().split()
    assert "icanon" in modes and "echo" in modes and "-icanon" not in modes
