"""Real `aiosd run` processes for integration and e2e tests.

Each daemon gets its own data dir and socket under the test's tmp_path, runs in its own
process group, and is always stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.waiting import wait_sync

AIOSD = [sys.executable, "-m", "aiosd.cli"]


def cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 30, check: bool = False,
        input_: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `aiosd ARGS` as a subprocess and return its result (text)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("NOTIFY_SOCKET", None)
    result = subprocess.run([*AIOSD, *args], check=False, capture_output=True, text=True, timeout=timeout_s, env=full_env,
                            input=input_)
    if check and result.returncode != 0:
        raise AssertionError(f"aiosd {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


class Daemon:
    """One `aiosd run` child process."""

    def __init__(self, root: Path, name: str = "n1", extra: Sequence[str] = (),
                 env: dict[str, str] | None = None, p2p_host: str = "127.0.0.1",
                 prefix: Sequence[str] = ()) -> None:
        self.root = root
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", NS]: run the daemon inside a namespace
        # The p2p listener binds loopback on a free port unless the test names its own (never 0.0.0.0:7701).
        self.p2p_host = p2p_host
        self.name = name
        self.data_dir = root / name
        # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
        self.socket = Path(tempfile.mkdtemp(prefix="aiosd-t", dir="/tmp")) / f"{name}.sock"
        self.log_path = root / f"{name}.log"
        self.extra = list(extra)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None

    @property
    def args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--socket", str(self.socket)]

    @property
    def run_args(self) -> list[str]:
        p2p = [] if "--p2p-host" in self.extra else ["--p2p-host", self.p2p_host]
        p2p += [] if "--p2p-port" in self.extra else ["--p2p-port", "0"]
        return [*self.args, *p2p, *self.extra]

    def p2p_address(self) -> str:
        """The host:port this daemon advertises to peers (from `aiosd nodes --json`)."""
        nodes = self.json("nodes")
        return str(next(n["addr"] for n in nodes["nodes"] if n["self"]))

    def start(self, *, wait: bool = True, timeout_s: float = 20) -> Daemon:
        notify_path = self.socket.parent / f"{self.name}.notify"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        # Test daemons run blocks as processes unless a test asks for Podman (--driver podman):
        # one Podman service per test daemon is slow on 2 cores and outlives a kill -9.
        env = {"AIOSD_RUNTIME_DRIVER": "process", **os.environ, "NOTIFY_SOCKET": str(notify_path), **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115  # handed to the child, closed below
        t0 = time.monotonic()
        self.proc = subprocess.Popen([*self.prefix, *AIOSD, "run", *self.run_args], stdout=log, stderr=log,
                                     env=env, start_new_session=True)
        log.close()
        try:
            if wait:
                notify.settimeout(0.1)
                deadline = t0 + timeout_s
                while True:
                    try:
                        if b"READY=1" in notify.recv(4096):
                            break
                    except TimeoutError:
                        pass
                    if self.proc.poll() is not None:
                        raise AssertionError(f"daemon {self.name} exited {self.proc.returncode}:\n{self.logs()}")
                    if time.monotonic() > deadline:
                        raise AssertionError(f"daemon {self.name} not ready in {timeout_s}s:\n{self.logs()}")
                self.ready_s = time.monotonic() - t0
        finally:
            notify.close()
            notify_path.unlink(missing_ok=True)
        return self

    def cli(self, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--socket", str(self.socket), "--data-dir", str(self.data_dir), timeout_s=timeout_s)

    def json(self, *args: str) -> Any:
        r = self.cli(*args, "--json")
        if r.returncode != 0:
            raise AssertionError(f"aiosd {' '.join(args)} failed: {r.stderr}")
        return json.loads(r.stdout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout_s: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def wait_status(self, timeout_s: float = 10) -> dict[str, Any]:
        def ok() -> dict[str, Any]:
            r = self.cli("status", "--json")
            return json.loads(r.stdout) if r.returncode == 0 else {}

        return wait_sync(ok, timeout_s=timeout_s, interval_s=0.1)


def start_network(root: Path, n: int, env: dict[str, str] | None = None, alive_timeout_s: float = 60) -> list[Daemon]:
    """n daemons on 127.0.0.2.. (data dirs root/n1..): the first creates the network, the others
    join with one token; returns once every node sees all n alive. Stops them all on failure."""
    first = Daemon(root, "n1", p2p_host="127.0.0.2", env=env).start()
    nodes = [first]
    try:
        tok = json.loads(first.cli("token", "create", "--json", "--uses", str(n), "--ttl", "10m").stdout)["token"]
        for i in range(2, n + 1):
            r = cli("join", tok, "--data-dir", str(root / f"n{i}"), "--json")
            assert r.returncode == 0, r.stderr
            nodes.append(Daemon(root, f"n{i}", p2p_host=f"127.0.0.{i + 1}", env=env).start())
        for d in nodes:
            deadline = time.monotonic() + alive_timeout_s
            while sum(x["state"] == "alive" for x in d.json("nodes")["nodes"]) != n:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{d.data_dir.name} does not see {n} alive nodes within {alive_timeout_s}s")
                time.sleep(0.5)
    except BaseException:
        for d in nodes:
            d.stop()
        raise
    return nodes
