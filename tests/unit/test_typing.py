"""Static checks that run with the suite: mypy --strict over the packages and tests/, ruff over everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.static_checks import mypy_result

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_mypy_strict_over_packages_and_tests() -> None:
    rc, out = mypy_result(timeout_s=800)  # started in the background at collection (tests/static_checks.py)
    assert rc == 0, out[-6000:]


@pytest.mark.timeout(300)
def test_ruff_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "aiosd", "federation", "storage", "runtime", "sdk",
                        "tests", "bench", "examples"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stdout[-4000:]
