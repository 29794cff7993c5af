"""`aiosd image build-base | build | list` with real Podman (skipped where Podman is absent)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


def test_block_requirements_are_installed_offline_from_its_wheels(tmp_path: Path) -> None:
    """requirements.txt + wheels/ in a block directory: installed on the host for the base image's
    Python (the build itself has no network), importable inside the image."""
    from runtime.podman_conf import podman_env, write_containers_conf
    from tests.integration.test_policy_sandbox import _wheel
    from tests.integration.test_runtime_support import CACHE

    d = str(tmp_path / "n")
    base = cli("image", "build-base", "--data-dir", d, "--json", timeout_s=900)
    assert base.returncode == 0, base.stderr
    block = tmp_path / "blk"
    (block / "wheels").mkdir(parents=True)
    (block / "block.py").write_text("import tinydep\nprint(tinydep.ANSWER)\n")
    (block / "requirements.txt").write_text("# what block.py imports\ntinydep==0.1.0\n")
    name, wheel = _wheel("tinydep", "0.1.0", "ANSWER = 42\n")
    (block / "wheels" / name).write_bytes(wheel)
    tag = f"localhost/aiosd-e2e-req:{os.getpid()}"
    built = cli("image", "build", str(block), "-t", tag, "--data-dir", d, "--json", timeout_s=300)
    assert built.returncode == 0, built.stderr
    try:
        ran = subprocess.run(["podman", "run", "--rm", "--network=none", tag], capture_output=True, text=True,
                             timeout=120, check=False, env=podman_env(write_containers_conf(CACHE)))
        assert ran.stdout.strip() == "42", ran.stderr
        # A requirement that no wheel satisfies: the build fails naming the file, nothing is tagged.
        (block / "requirements.txt").write_text("tinydep==9.9\n")
        bad = cli("image", "build", str(block), "-t", tag + "-bad", "--data-dir", d, timeout_s=300)
        assert bad.returncode == 1 and "requirements.txt" in bad.stderr and "failed" in bad.stderr, bad.stderr
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, timeout=60, check=False)
