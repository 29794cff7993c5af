"""The long API fuzz of issue 18: schemathesis, 100 examples per operation, against a real daemon.

    .venv/bin/python bench/fuzz_api.py [--examples 100] [--seed 18]

Prints the outcome, the time taken, and the daemon's open files and RSS after / before (ratios).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzzing import fuzz_daemon  # after the path fix


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--seed", type=int, default=18)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiosd-fuzz-") as tmp:
        run = fuzz_daemon(Path(tmp), a.examples, a.seed, timeout_s=3600)
    summary = [ln for ln in run.output.splitlines() if "generated" in ln or "passed" in ln or "failure" in ln]
    print("\n".join(summary[-4:]))
    print(f"rc={run.rc} took_s={run.took_s:.1f} tracebacks_in_log={run.daemon_log.count('Traceback')}")
    print(f"open_files after/before = {run.fds_after}/{run.fds_before} = {run.fds_after / run.fds_before:.2f}")
    print(f"rss after/before = {run.rss_after >> 20}/{run.rss_before >> 20} MiB = {run.rss_after / run.rss_before:.2f}")
    if run.rc != 0:
        print(run.output[-8000:])
    return run.rc


if __name__ == "__main__":
    sys.exit(main())
