"""`aiosd image build-base | build | list` with real Podman (skipped where Podman is absent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.daemons import cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                                reason="podman and runc are not installed")


def test_build_base_then_echo_block_then_list(tmp_path: Path) -> None:
    d = str(tmp_path / "n")
    base = cli("image", "build-base", "--data-dir", d, "--json", timeout_s=900)
    assert base.returncode == 0, base.stderr
    assert json.loads(base.stdout)["latest"] == "localhost/aiosd-base:latest"
    tag = "localhost/aiosd-e2e-echo:1"
    built = cli("image", "build", str(ROOT / "examples" / "echo"), "-t", tag, "--data-dir", d, "--json",
                timeout_s=300)
    assert built.returncode == 0, built.stderr
    listed = cli("image", "list", "--data-dir", d, "--json")
    assert tag in {row["name"] for row in json.loads(listed.stdout)}


def test_bad_block_dir_and_tag_are_clear_errors(tmp_path: Path) -> None:
    d = str(tmp_path / "n")
    r = cli("image", "build", str(tmp_path), "-t", "localhost/x:1", "--data-dir", d)
    assert r.returncode == 1 and "block.py does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "block.py").write_text("print('hi')\n")
    r = cli("image", "build", str(tmp_path), "-t", "Not A Tag", "--data-dir", d)
    assert r.returncode == 1 and "not a valid image name" in r.stderr
