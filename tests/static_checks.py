"""mypy --strict over the packages and tests/, started in the background when the suite collects
tests/unit/test_typing.py (at the lowest CPU priority: it fills the time the daemon tests spend
waiting, instead of adding a minute of its own at the end). The test waits for its answer."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The packages come from pyproject's [tool.mypy]; tests/ is added here (STYLE §8).
MYPY = [sys.executable, "-m", "mypy", "aiosd", "federation", "storage", "runtime", "sdk", "tests"]


class _Run:
    def __init__(self) -> None:
        self.out = tempfile.TemporaryFile()  # noqa: SIM115  # read back by result()
        self.proc = subprocess.Popen(["nice", "-n", "19", *MYPY], cwd=ROOT, stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def result(self, timeout_s: float) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.out.seek(0)
        text = self.out.read().decode(errors="replace")
        self.out.close()
        return rc, text


_background: _Run | None = None


def start_mypy() -> None:
    global _background
    if _background is None:
        _background = _Run()


def mypy_result(timeout_s: float = 600) -> tuple[int, str]:
    """mypy's exit code and output: the background run's if one was started, else a run now."""
    global _background
    run, _background = _background, None
    return (run or _Run()).result(timeout_s)
