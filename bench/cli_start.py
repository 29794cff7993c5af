"""CLI start-up: `aiosd version`, `aiosd --version` and `aiosd status --json` (daemon running) against
`python3 -c pass` in the same run (issue #13: median of 7 runs each <= 5x the baseline).

Starts one real `aiosd run` (process driver, loopback p2p) in a temp dir, then times each command
as a fresh process, interleaved with the baselines so load on the machine hits all alike. The
`aiosd` console script of the interpreter's environment is used (what users run); the baselines
are the interpreter `python3` resolves to (`python3 -c pass`, past any pyenv shim) and the venv's
own python (which also pays for the editable install's import hook).

Usage: .venv/bin/python bench/cli_start.py [--runs 7] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5.0  # ratio to `python3 -c pass`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, timeout=60, check=False)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return took


def start_daemon(tmp: Path, sock: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "aiosd.cli", "run", "--data-dir", str(tmp / "d"),
                             "--socket", str(sock), "--p2p-host", "127.0.0.1", "--p2p-port", str(free_port())],
                            env={**env, "AIOSD_RUNTIME_DRIVER": "process"}, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "daemon.log", "wb"), start_new_session=True)  # noqa: SIM115
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sock.exists() and subprocess.run([sys.executable, "-m", "aiosd.cli", "status", "--socket", str(sock)],
                                            env=env, capture_output=True, check=False).returncode == 0:
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited: {(tmp / 'daemon.log').read_text()[-800:]}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the daemon did not answer within 60 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--importtime", action="store_true", help="also print the largest imports of `status --json`")
    ap.add_argument("--before", metavar="AIOSD", help="another `aiosd` script to time as well (an older checkout)")
    opts = ap.parse_args()
    script = Path(sys.executable).with_name("aiosd")
    aiosd = [str(script)] if script.exists() else [sys.executable, "-m", "aiosd.cli"]
    # The interpreter `python3` runs (a pyenv shim is a shell script that costs ~0.4 s by itself).
    found = shutil.which("python3")
    system_py = subprocess.run([found, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                               check=True, timeout=60).stdout.strip() if found else sys.executable
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    tmp = Path(tempfile.mkdtemp(prefix="aiosd-bench-cli-"))
    sock = Path(tempfile.mkdtemp(prefix="aiosd-b", dir="/tmp")) / "n.sock"
    proc = start_daemon(tmp, sock, env)
    cases = {
        "python3 -c pass": [system_py, "-c", "pass"],
        "venv python -c pass": [sys.executable, "-c", "pass"],
        "aiosd version": [*aiosd, "version"],
        "aiosd --version": [*aiosd, "--version"],
        "aiosd status --json": [*aiosd, "status", "--json", "--socket", str(sock)],
        "aiosd --help": [*aiosd, "--help"],
    }
    if opts.before:
        cases["before: aiosd version"] = [opts.before, "version"]
        cases["before: status --json"] = [opts.before, "status", "--json", "--socket", str(sock)]
    try:
        for cmd in cases.values():  # warm the page cache once
            timed(cmd, env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(opts.runs):
            for name, cmd in cases.items():
                samples[name].append(timed(cmd, env))
        if opts.importtime:
            r = subprocess.run([sys.executable, "-X", "importtime", "-m", "aiosd.cli", "status", "--json",
                                "--socket", str(sock)], env=env, capture_output=True, text=True, check=False)
            rows = [line.split("|") for line in r.stderr.splitlines() if line.startswith("import time:")][1:]
            top = sorted(rows, key=lambda x: -int(x[1]))[:12]
            print("largest cumulative imports of `aiosd status --json` (us):")
            for row in top:
                print(f"  {int(row[1]):>8}  {row[2].rstrip()}")
            print(f"  modules imported: {len(rows)}; aiohttp loaded: {'aiohttp' in r.stderr}, "
                  f"pydantic loaded: {'pydantic' in r.stderr}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(sock.parent, ignore_errors=True)
    base = statistics.median(samples["python3 -c pass"])
    venv = statistics.median(samples["venv python -c pass"])
    print(f"median of {opts.runs} runs each (ms); ratio = median / median(python3 -c pass), target <= {TARGET:g}x")
    failed = False
    for name, xs in samples.items():
        med = statistics.median(xs)
        ratio = med / base
        mark = ""
        if name.startswith("aiosd") and name not in ("aiosd --help", "aiosd --version"):
            mark = "ok" if ratio <= TARGET else "OVER TARGET"
            failed |= ratio > TARGET
        print(f"  {name:<23} {med * 1000:7.1f} ms  {ratio:5.2f}x  ({med / venv:4.2f}x venv python)  {mark}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
