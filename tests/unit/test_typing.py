"""Static checks that run with the suite: mypy --strict over the packages and tests/, ruff over everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_mypy_strict_over_packages_and_tests() -> None:
    # The packages come from pyproject's [tool.mypy]; tests/ is added here (STYLE §8).
    r = subprocess.run([sys.executable, "-m", "mypy", "aiosd", "federation", "storage", "runtime", "sdk", "tests"],
                       cwd=ROOT, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.timeout(300)
def test_ruff_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "aiosd", "federation", "storage", "runtime", "sdk",
                        "tests", "bench", "examples"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stdout[-4000:]
