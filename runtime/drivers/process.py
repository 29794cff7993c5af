"""Process driver: each instance is a child process in its own session (process group).

State lives under `<data_dir>/instances/<instance_id>/` (state.json: pid + start time + owner,
output.log), so a restarted daemon adopts live processes instead of starting duplicates. Each
process carries its owner's markers (owner.py); at start the driver reaps marked processes whose
owner data dir is gone, and its own ones it has no record of. GPU isolation beyond
CUDA_VISIBLE_DEVICES is not enforced here (that is podman's job). `resources` are enforced with
cgroup v1 like Podman's, or rlimits where cgroups are not writable (limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Self

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from runtime.drivers import owner as own
from runtime.drivers.base import SOCKET_NAME, Observed, instance_env
from runtime.drivers.limits import MODE_NONE, CgroupLimits, wrap
from runtime.errors import InstanceNotFound, InstanceStartError, SpecError
from runtime.images import sdk_source_dir
from runtime.spec import Endpoint, GpuDevice, InstanceSpec

log = logging.getLogger(__name__)

_STATE = "state.json"
_LOG = "output.log"
_START_TIME_SLACK_S = 0.05  # psutil create_time jitter; a reused pid differs by far more
_TAIL_READ_BYTES = 1 << 20  # logs() reads at most the last 1 MiB to find `tail` lines
_FOLLOW_POLL_S = 0.1
_STOP_POLL_S = 0.02
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


class ProcessDriver:
    """Runs `python block.py` in the block directory as a child process."""

    name = "process"

    def __init__(self, data_dir: Path, node_id: str, cluster_id: str = "default",
                 python: str = sys.executable, limits: CgroupLimits | None = None) -> None:
        self.limits = limits or CgroupLimits()
        self.root = data_dir / "instances"
        self.data_dir = data_dir
        self.owner = own.owner_id(node_id, data_dir)
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.python = python
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._exit_codes: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(own.claim, self.data_dir, self.owner)
        await self.reap_orphans()
        return self

    async def reap_orphans(self) -> list[int]:
        """Stop marked processes whose owner data dir is gone (or claimed by another owner), and our own
        ones without a state record (or not the process recorded there); the pids reaped."""
        return await asyncio.to_thread(self._reap)

    def _reap(self) -> list[int]:
        return own.reap(own.orphans(own.scan_marked(), self.owner, self._knows))

    def _knows(self, m: own.Marked) -> bool:
        if m.role != own.ROLE_INSTANCE or not m.instance_id:
            return False  # our own podman service, left from a run with the podman driver
        try:
            state = json.loads((self.root / m.instance_id / _STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(state, dict) and state.get("pid") == m.pid

    async def __aexit__(self, *exc: object) -> None:
        # Children keep running: a restarted daemon adopts them (stop them through the supervisor).
        self._children.clear()

    async def check_image(self, spec: InstanceSpec) -> None:
        if spec.block_dir is None:
            raise SpecError("block_dir", "the process driver runs a block directory; image-only specs need podman")

    async def start(self, spec: InstanceSpec, socket_dir: str, gpus: tuple[GpuDevice, ...]) -> Observed:
        await self.check_image(spec)
        assert spec.block_dir is not None  # checked above
        d = self.root / spec.instance_id
        sock = str(Path(socket_dir) / SOCKET_NAME)
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env["PYTHONPATH"] = str(sdk_source_dir().parent)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(instance_env(spec, self.node_id, self.cluster_id, sock, gpus))
        env.update(own.owner_env(self.owner, self.data_dir, own.ROLE_INSTANCE, spec.instance_id))
        cmd = list(spec.command) or [self.python, "block.py"]
        cgroup = f"aiosd-{self.owner}-{hashlib.sha256(spec.instance_id.encode()).hexdigest()[:12]}"
        applied = await asyncio.to_thread(self.limits.apply, cgroup, spec.resources)
        if applied.mode != MODE_NONE:
            cmd = wrap(cmd, applied.procs_files)  # joins the cgroups / sets rlimits, then execs cmd (same pid)
            env.update(applied.env or {})
        try:
            proc = await asyncio.to_thread(self._spawn, d, cmd, Path(spec.block_dir), env)
        except OSError as e:
            raise InstanceStartError(f"instance {spec.instance_id}: cannot run {cmd[0]!r}: {e}") from e
        self._children[spec.instance_id] = proc
        self._exit_codes.pop(spec.instance_id, None)
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            created = 0.0  # exited already; the next observation reports its exit code
        started = time.time()
        state = {"pid": proc.pid, "create_time": created, "block_id": spec.block_id,
                 "instance_id": spec.instance_id, "digest": spec.digest(), "socket": sock,
                 "started_at": started, "node_id": self.node_id, "owner": self.owner,
                 "data_dir": os.path.abspath(self.data_dir), "limits": applied.mode, "cgroups": list(applied.dirs),
                 "unenforced": list(applied.unenforced)}
        await asyncio.to_thread(_write_json, d / _STATE, state)
        log.info("process started", extra={"instance": spec.instance_id, "pid": proc.pid, "limits": applied.mode,
                                            "unenforced": list(applied.unenforced)})
        return Observed(spec.block_id, spec.instance_id, str(proc.pid), spec.digest(), Endpoint(socket=Path(sock)),
                        True, None, started)

    @staticmethod
    def _spawn(d: Path, cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        d.mkdir(parents=True, exist_ok=True)
        out = d / _LOG
        if out.exists():  # keep one previous run's output; bounds disk use across restarts
            out.replace(d / (_LOG + ".1"))
        with open(out, "ab") as f:
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def _observe(self, state: Mapping[str, object]) -> Observed:
        iid = str(state["instance_id"])
        pid = int(str(state["pid"]))
        alive, code = self._liveness(iid, pid, float(str(state["create_time"])))
        return Observed(str(state["block_id"]), iid, str(pid), str(state["digest"]),
                        Endpoint(socket=Path(str(state["socket"]))), alive, code, float(str(state["started_at"])))

    def _liveness(self, iid: str, pid: int, create_time: float) -> tuple[bool, int | None]:
        if iid in self._exit_codes:
            return False, self._exit_codes[iid]
        child = self._children.get(iid)
        if child is not None and child.pid == pid:
            rc = child.poll()
            if rc is None:
                return True, None
            self._exit_codes[iid] = _exit_code(rc)
            return False, self._exit_codes[iid]
        try:  # our child from an earlier driver object in this process?
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                self._exit_codes[iid] = _exit_code(os.waitstatus_to_exitcode(status))
                return False, self._exit_codes[iid]
        except ChildProcessError:
            pass
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - create_time) > _START_TIME_SLACK_S:
                return False, None  # the pid was reused by another process
            if p.status() == psutil.STATUS_ZOMBIE:
                return False, None
            return True, None
        except psutil.Error:
            return False, None

    async def list_owned(self) -> Mapping[str, Observed]:
        return await asyncio.to_thread(self._list_owned)

    def _list_owned(self) -> dict[str, Observed]:
        out: dict[str, Observed] = {}
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            try:
                state = json.loads((d / _STATE).read_text(encoding="utf-8"))
                if state.get("node_id") != self.node_id or state.get("owner", self.owner) != self.owner:
                    continue  # another daemon's (a copied data dir); records before owners count as ours
                obs = self._observe(state)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a half-written or foreign directory is not ours to touch
            out[obs.instance_id] = obs
        return out

    async def _state(self, instance_id: str) -> dict[str, object] | None:
        try:
            text = await asyncio.to_thread((self.root / instance_id / _STATE).read_text, encoding="utf-8")
            state: dict[str, object] = json.loads(text)
            return state
        except (OSError, ValueError):
            return None

    async def stop(self, instance_id: str, timeout_s: float) -> None:
        state = await self._state(instance_id)
        if state is None:
            return
        obs = self._observe(state)
        pid = int(obs.handle)
        if obs.alive:
            _killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while self._observe(state).alive and time.monotonic() < deadline:
                await asyncio.sleep(_STOP_POLL_S)
        if obs.alive:
            # SIGKILL the whole group: a leader that exited on SIGTERM may leave children behind.
            # (Only when the leader was ours a moment ago; a dead record's pid may name someone else's group.)
            _killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self._observe(state).alive and time.monotonic() < deadline:
                await asyncio.sleep(_STOP_POLL_S)

    async def remove(self, instance_id: str) -> None:
        await self.stop(instance_id, timeout_s=0)
        state = await self._state(instance_id)
        cgroups = state.get("cgroups") if state is not None else None
        if isinstance(cgroups, list) and cgroups:
            await asyncio.to_thread(self.limits.remove, [str(c) for c in cgroups])
        self._children.pop(instance_id, None)
        self._exit_codes.pop(instance_id, None)
        await asyncio.to_thread(shutil.rmtree, self.root / instance_id, True)

    async def last_lines(self, instance_id: str, n: int) -> tuple[str, ...]:
        return tuple(await asyncio.to_thread(_tail, self.root / instance_id / _LOG, n))

    async def logs(self, instance_id: str, tail: int = 100, follow: bool = False) -> AsyncIterator[str]:
        path = self.root / instance_id / _LOG
        if not await asyncio.to_thread(path.is_file):
            raise InstanceNotFound(instance_id)
        lines, pos = await asyncio.to_thread(_tail_at, path, tail)
        for line in lines:
            yield line
        if not follow:
            return
        partial = b""
        while True:
            chunk = await asyncio.to_thread(_read_from, path, pos)
            if chunk is None:
                return  # removed
            if chunk:
                pos += len(chunk)
                *complete, partial = (partial + chunk).split(b"\n")
                for raw in complete:
                    yield raw.decode(errors="replace")
            else:
                await asyncio.sleep(_FOLLOW_POLL_S)


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc  # -9 → 137, like a shell


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _write_json(path: Path, doc: Mapping[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(path)


def _tail(path: Path, n: int) -> list[str]:
    return _tail_at(path, n)[0]


def _tail_at(path: Path, n: int) -> tuple[list[str], int]:
    """The last `n` complete lines and the file offset just after them (where following resumes)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - _TAIL_READ_BYTES)
            f.seek(start)
            data = f.read()
    except OSError:
        return [], 0
    end = data.rfind(b"\n") + 1  # a partial last line is left for the follower
    lines = data[:end].decode(errors="replace").splitlines()
    return (lines[-n:] if n > 0 else []), start + end


def _read_from(path: Path, pos: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            return f.read(_TAIL_READ_BYTES)
    except OSError:
        return None
