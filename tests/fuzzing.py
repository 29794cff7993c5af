"""Schemathesis against a real daemon's TCP API (issue 18): the runner shared by the CI test
(tests/integration/test_api_fuzz.py, few examples) and the bench (bench/fuzz_api.py, 100 per operation).

Every operation but the streams (SSE watch, log follow, blob download) is fuzzed from
/v1/openapi.json with a fixed seed; checks: no server error, status codes and response bodies
as documented. The daemon's open files and RSS are sampled before and after.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from tests.daemons import Daemon

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
STREAMS = r"^/v1/(watch|blobs/|logs/|stop$)"  # streams, and the route that stops the daemon under test
EXTRA: list[str] = []  # more schemathesis options (bench and debugging)


@dataclass(frozen=True, slots=True)
class FuzzRun:
    rc: int
    output: str
    took_s: float
    fds_before: int
    fds_after: int
    rss_before: int
    rss_after: int
    daemon_log: str


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fuzz_daemon(root: Path, examples: int, seed: int = 18, timeout_s: float = 600) -> FuzzRun:
    """Start a daemon with a TCP API, run schemathesis against it, stop it."""
    port = free_port()
    d = Daemon(root, "fz", extra=["--api-port", str(port)]).start()
    try:
        proc = psutil.Process(d.pid)
        time.sleep(1.0)  # let start-up settle before the baseline
        fds0, rss0 = proc.num_fds(), proc.memory_info().rss
        token = (d.data_dir / "api.token").read_text().strip()
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"http://127.0.0.1:{port}/v1/openapi.json",
             "-H", f"Authorization: Bearer {token}", "-c", CHECKS, "-n", str(examples), "--seed", str(seed),
             "--exclude-path-regex", STREAMS, "--request-timeout", "20", "--phases", "examples,fuzzing",
             *EXTRA],
            capture_output=True, text=True, timeout=timeout_s, check=False, cwd=root)
        took = time.monotonic() - t0
        time.sleep(1.0)
        return FuzzRun(r.returncode, r.stdout + r.stderr, took, fds0, proc.num_fds(), rss0,
                       proc.memory_info().rss, d.logs())
    finally:
        d.stop()


__all__ = ["CHECKS", "STREAMS", "FuzzRun", "fuzz_daemon"]
