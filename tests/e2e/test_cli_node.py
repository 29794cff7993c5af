"""The CLI as a subprocess against real `aiosd run` daemons."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli


def test_help_teaches_with_examples() -> None:
    top = cli("--help")
    assert top.returncode == 0 and "aiosd run" in top.stdout and "aiosd status" in top.stdout
    for cmd in ["init", "run", "status", "version", "config"]:
        r = cli(cmd, "--help")
        assert r.returncode == 0, r.stderr
        assert "example" in r.stdout, f"`aiosd {cmd} --help` shows no example"


def test_version_json() -> None:
    r = cli("version", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["version"]


def test_usage_errors_exit_2_without_traceback() -> None:
    r = cli("frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("run", "--p2p-port", "notanumber")
    assert r.returncode == 2 and "invalid int value" in r.stderr


def test_init_creates_identity_and_refuses_twice(tmp_path: Path) -> None:
    d = tmp_path / "n"
    r = cli("init", "--data-dir", str(d), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert len(info["node_id"]) == 16 and info["ca_fingerprint"].startswith("sha256:")
    key = d / "identity" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "identity" / "ca.key").stat().st_mode) == 0o600
    before = key.read_bytes()
    again = cli("init", "--data-dir", str(d))
    assert again.returncode == 1 and "already initialised" in again.stderr and "--force" in again.stderr
    assert key.read_bytes() == before
    forced = cli("init", "--data-dir", str(d), "--force", "--json")
    assert forced.returncode == 0 and json.loads(forced.stdout)["node_id"] != info["node_id"]


def test_run_status_and_clean_stop(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path).start()
    daemons.append(d)
    st = d.json("status")
    assert len(st["node_id"]) == 16 and st["cluster"] == "default" and st["data_dir"] == str(d.data_dir)
    human = d.cli("status")
    assert human.returncode == 0 and st["node_id"] in human.stdout
    assert d.ready_s is not None and d.ready_s < 10
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0
    assert time.monotonic() - t0 < 10
    logs = d.logs()
    for step in ["store opened", "identity loaded", "api listening", "daemon ready", "daemon stopping",
                 "store closed", "daemon stopped"]:
        assert step in logs, f"lifecycle line {step!r} missing"
    assert "initialised a new single-node network" in logs
    assert not d.socket.exists()
    down = d.cli("status")
    assert down.returncode == 1 and "aiosd is not running" in down.stderr and "aiosd run" in down.stderr


def test_sigint_also_stops_cleanly(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path).start()
    daemons.append(d)
    d.signal(signal.SIGINT)
    assert d.wait_exit(10) == 0


def test_second_daemon_on_same_dir_is_refused(tmp_path: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tmp_path).start()
    daemons.append(first)
    node_id = first.json("status")["node_id"]
    second = Daemon(tmp_path, "n1")  # same data dir, its own socket
    second.start(wait=False)
    assert second.wait_exit(15) == 1
    assert "in use by another aiosd process" in second.logs()
    assert "Traceback" not in second.logs()
    assert first.json("status")["node_id"] == node_id  # the first is unharmed


def test_config_with_unknown_key_exits_2_naming_key_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[p2p]\nprot = 1\n")
    r = cli("run", "--config", str(cfg), "--data-dir", str(tmp_path / "n"))
    assert r.returncode == 2
    assert "p2p.prot" in r.stderr and str(cfg) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "n").exists()


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_corrupted_store_is_reported_and_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "n"
    assert cli("init", "--data-dir", str(d)).returncode == 0
    data = d / "db" / "data.mdb"
    data.write_bytes(os.urandom(8192))
    (d / "db" / "lock.mdb").unlink()
    before = _tree_digest(d)
    r = cli("run", "--data-dir", str(d), "--socket", str(tmp_path / "x.sock"))
    assert r.returncode == 1
    assert "not a usable LMDB store" in r.stderr and "Traceback" not in r.stderr
    after = _tree_digest(d)
    after.pop("db/aiosd.lock", None)
    before.pop("db/aiosd.lock", None)
    assert after == before


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_data_dir_without_permission(tmp_path: Path) -> None:
    # root ignores file modes; dropping CAP_DAC_OVERRIDE makes the kernel check them again.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    os.chown(locked, 65534, 65534)
    import sys

    r = subprocess.run(["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                        "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "aiosd.cli",
                        "init", "--data-dir", str(locked / "n")], check=False, capture_output=True, text=True, timeout=30,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 1, r.stderr
    assert "permission denied" in r.stderr and "Traceback" not in r.stderr
    assert list(locked.iterdir()) == []


def test_api_port_with_token(tmp_path: Path, daemons: list[Daemon]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Daemon(tmp_path, extra=["--api-port", str(port)]).start()
    daemons.append(d)
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5)
    assert e.value.code == 401
    e.value.close()  # the error holds the response's socket
    token = (d.data_dir / "api.token").read_text().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read())["node_id"] == d.json("status")["node_id"]
