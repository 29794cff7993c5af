"""The shipped systemd unit passes `systemd-analyze verify` (works without systemd as PID 1)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aiosd.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies(tmp_path: Path) -> None:
    aiosd_bin = Path(sys.executable).with_name("aiosd")
    assert aiosd_bin.exists(), "the aiosd console script is not installed in this environment"
    unit = (ROOT / "systemd" / "aiosd.service").read_text()
    assert "Type=notify" in unit and "ProtectSystem=" in unit and "NoNewPrivileges=yes" in unit
    # verify checks that ExecStart exists on this host: point it at this environment's script.
    local = tmp_path / "aiosd.service"
    local.write_text(unit.replace("/usr/local/bin/aiosd", str(aiosd_bin)))
    r = subprocess.run(["systemd-analyze", "verify", str(local)], check=False, capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "aiosd.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_shipped_config_is_valid_and_turns_mdns_on() -> None:
    s = load_settings(ROOT / "systemd" / "aiosd.toml", env={})
    assert s.discovery.mdns is True
    assert str(s.socket_path) == "/run/aiosd/aiosd.sock"
