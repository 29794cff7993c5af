"""Issue 18: schemathesis against a real daemon's TCP API in CI (fixed seed, few examples per
operation, well under 3 minutes): no 5xx, statuses and bodies as documented, no traceback in
the daemon's log, open files back to baseline. The long run is bench/fuzz_api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzzing import fuzz_daemon

pytestmark = pytest.mark.timeout(240)


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    run = fuzz_daemon(tmp_path, examples=5, timeout_s=180)
    assert run.rc == 0, run.output[-6000:]
    assert "Traceback" not in run.daemon_log, run.daemon_log[-4000:]
    assert run.fds_after <= run.fds_before + 16, (run.fds_before, run.fds_after)
