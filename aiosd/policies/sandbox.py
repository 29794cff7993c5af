"""The policy sandbox: policies run in worker processes, never in the daemon's process.

One worker per loaded policy instance (sticky: a stateful policy keeps its state across calls),
at most `max_workers` (least recently used idle ones are stopped). Each call has a timeout
(the worker is killed and replaced on the next call); each worker has an address-space limit
(RLIMIT_AS), no core dumps, a small fd and file-size limit.

What a policy can reach (and what it cannot):
- It runs as `run_as_uid` (`nobody` when the daemon is root), with a clean environment (PATH,
  LANG, HOME only: no AIOSD_* variables, no tokens), no inherited file descriptors beyond its
  protocol pipes and stderr file, and its cwd in the sandbox directory (outside the data dir).
  The data dir is 0700 and the node key 0600, both owned by the daemon user, so the policy
  cannot read the node key, the CA key, the API token or the LMDB store; it cannot ptrace the
  daemon or read its /proc/PID/environ (different uid).
- It CAN read world-readable files, use the network and burn CPU within the call timeout.
  When the daemon is not root, the worker runs as the daemon's own user: the environment and
  cwd are still clean, but files the daemon user can read are readable (a WARNING says so).
- Tightening later: run the worker under Podman (`--network=none --read-only --cap-drop=all
  --memory`, runc as in docs/machine notes) or `unshare --user --map-root-user --mount --net`
  with a tmpfs over the data dir; the worker protocol (pipes) does not change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiosd.policies.errors import (
    PolicyCrashed,
    PolicyError,
    PolicyFailed,
    PolicyInputError,
    PolicyLoadError,
    PolicyOutputError,
    PolicyTimeout,
)
from aiosd.specs.protocol import EMPTY_PROTOCOL, Protocol, check_value

log = logging.getLogger(__name__)

WORKER_SOURCE = Path(__file__).with_name("worker.py")
_HDR = 4
# Why 8 MiB: the local API's body cap; a policy answer is a decision, not bulk data.
MAX_RESULT_BYTES = 8 << 20
# Why 2 KiB: enough of a traceback or of stderr to name the failure in one error message.
STDERR_TAIL_BYTES = 2048


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Limits and places of the sandbox (each limit applies per worker)."""

    root: Path  # code, venvs, scratch: outside the data dir, readable by the sandbox user
    python: str  # interpreter for policies without requirements (and the base of their venvs)
    run_as_uid: int | None = None  # None: the daemon's own user
    run_as_gid: int | None = None
    memory_limit_mb: int = 1024  # RLIMIT_AS; an interpreter + a small venv fit in ~100 MB
    call_timeout_s: float = 5.0  # per eval/management call; callers may ask for less, never more
    load_timeout_s: float = 30.0  # import + constructor (a venv with big packages imports slowly)
    max_workers: int = 16  # live workers (one per policy instance); 2-core machines run ~30 MB each
    nofile: int = 256
    fsize_mb: int = 64

    @staticmethod
    def default(root: Path) -> SandboxConfig:
        """Root daemon: workers run as `nobody` with the system Python (readable by it)."""
        python = str(getattr(sys, "_base_executable", sys.executable))
        uid = gid = None
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam("nobody")
                uid, gid = pw.pw_uid, pw.pw_gid
            if uid is not None and not _world_executable(python) and os.path.exists("/usr/bin/python3"):
                python = "/usr/bin/python3"
        return SandboxConfig(root=root, python=python, run_as_uid=uid, run_as_gid=gid)


def _world_executable(path: str) -> bool:
    """Whether an unprivileged user can run `path` (every parent directory traversable)."""
    p = Path(path).resolve()
    for parent in [p, *p.parents]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
    return True


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What a worker needs to load one policy instance."""

    uri: str
    code_dir: Path
    python: str
    rule_id: str
    parameters: Mapping[str, Any]
    settings: Mapping[str, Any]
    input_protocol: Protocol = EMPTY_PROTOCOL
    output_protocol: Protocol = EMPTY_PROTOCOL
    archive_sha256: str = ""

    @property
    def key(self) -> str:
        blob = json.dumps([self.uri, self.archive_sha256, self.rule_id, self.parameters, self.settings],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


class _Worker:
    """One child process speaking the frame protocol over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, err_path: Path) -> None:
        self.proc = proc
        self.err_path = err_path

    @classmethod
    async def spawn(cls, cfg: SandboxConfig, spec: LoadSpec, worker_py: Path, scratch: Path) -> _Worker:
        limits = {"memory_bytes": cfg.memory_limit_mb << 20, "nofile": cfg.nofile,
                  "fsize_bytes": cfg.fsize_mb << 20, "max_result_bytes": MAX_RESULT_BYTES}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(scratch),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        err_path = scratch / "stderr.log"
        err = await asyncio.to_thread(_open_stderr, err_path, cfg)
        kwargs: dict[str, Any] = {}
        if cfg.run_as_uid is not None:
            kwargs = {"user": cfg.run_as_uid, "group": cfg.run_as_gid, "extra_groups": []}
        try:
            proc = await asyncio.create_subprocess_exec(
                spec.python, "-I", "-B", str(worker_py), json.dumps(limits),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                cwd=str(scratch), env=env, close_fds=True, start_new_session=True, **kwargs)
        except OSError as e:
            raise PolicyLoadError(spec.uri, f"cannot start a worker with {spec.python} ({e.strerror})") from None
        finally:
            err.close()
        return cls(proc, err_path)

    async def call(self, req: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and read its answer.

        Raises: TimeoutError (no answer in time), EOFError (the worker died), ValueError (garbage).
        """
        assert self.proc.stdin is not None and self.proc.stdout is not None  # PIPEs above
        body = json.dumps(req, separators=(",", ":"), allow_nan=False).encode()
        async with asyncio.timeout(timeout_s):
            try:
                self.proc.stdin.write(len(body).to_bytes(_HDR, "big") + body)
                await self.proc.stdin.drain()
                n = int.from_bytes(await self.proc.stdout.readexactly(_HDR), "big")
                if n > MAX_RESULT_BYTES + 1024:
                    raise ValueError(f"answer of {n} bytes")
                raw = await self.proc.stdout.readexactly(n)
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
                raise EOFError from None
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise TypeError("answer is not an object")
        return answer

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def kill_now(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()

    async def how_it_died(self) -> str:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.proc.wait()
        rc = self.proc.returncode
        if rc is None:
            how = "stopped answering"
        elif rc < 0:
            how = f"killed by {signal.Signals(-rc).name}" if -rc in signal.valid_signals() else f"signal {-rc}"
        else:
            how = f"exit code {rc}"
        tail = await asyncio.to_thread(_tail, self.err_path)
        return f"{how}; stderr: {tail}" if tail else how


def _open_stderr(path: Path, cfg: SandboxConfig) -> Any:
    f = open(path, "wb")  # noqa: SIM115  # handed to the child, closed right after the spawn
    if cfg.run_as_uid is not None:
        os.chown(path, cfg.run_as_uid, cfg.run_as_gid if cfg.run_as_gid is not None else -1)
    return f


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - STDERR_TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace").strip().replace("\n", " | ")[-600:]
    except OSError:
        return ""


class SandboxedPolicy:
    """A loaded policy instance in its own worker; the async twin of `PolicyHandle`."""

    def __init__(self, sandbox: Sandbox, spec: LoadSpec) -> None:
        self._sandbox = sandbox
        self.spec = spec
        self.uri = spec.uri
        self.parameters = dict(spec.parameters)
        self.settings = dict(spec.settings)
        self._worker: _Worker | None = None
        self._lock = asyncio.Lock()
        self.calls = 0
        self.restarts = -1  # the first start is not a restart
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def eval(self, input_data: Mapping[str, Any], context: Any = None,
                   parameters: Mapping[str, Any] | None = None, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Run `eval` in the worker; per-call `parameters` override the loaded ones.

        Raises:
            PolicyInputError: input_data breaks the policy's input schema.
            PolicyTimeout, PolicyCrashed, PolicyLoadError, PolicyFailed, PolicyOutputError.
        """
        problems = check_value(self.spec.input_protocol, dict(input_data), "input")
        if problems:
            raise PolicyInputError(problems[0].path, "; ".join(p.message for p in problems[:5]))
        params = self.parameters if not parameters else {**self.parameters, **parameters}
        out = await self._call({"op": "eval", "parameters": params, "input": dict(input_data),
                                "context": context}, timeout_s)
        problems = check_value(self.spec.output_protocol, out, "result")
        if problems:
            raise PolicyOutputError(self.uri, "; ".join(str(p) for p in problems[:5]))
        return out

    async def management(self, action: str, data: Mapping[str, Any], *,
                         timeout_s: float | None = None) -> dict[str, Any]:
        """Run `management(action, data)` in the same worker as `eval` (same state)."""
        return await self._call({"op": "mgmt", "action": action, "data": dict(data)}, timeout_s)

    async def _call(self, req: dict[str, Any], timeout_s: float | None) -> dict[str, Any]:
        cfg = self._sandbox.cfg
        limit = cfg.call_timeout_s if timeout_s is None else max(0.001, min(timeout_s, cfg.call_timeout_s))
        async with self._lock:
            worker = await self._ensure_worker()
            self.calls += 1
            try:
                answer = await worker.call(req, limit)
            except TimeoutError:
                await self._drop_worker()
                log.warning("policy call timed out", extra={"policy": self.uri, "timeout_s": limit})
                raise PolicyTimeout(self.uri, limit) from None
            except asyncio.CancelledError:
                # The caller left mid-call: the answer would be read by the next call, so this
                # worker cannot be reused. The sandbox kills and reaps it (we are being cancelled).
                self._worker = None
                self._sandbox._retire_soon(worker)
                raise
            except (EOFError, ValueError, TypeError):
                how = await worker.how_it_died()
                await self._drop_worker()
                log.warning("policy worker died", extra={"policy": self.uri, "how": how[:200]})
                raise PolicyCrashed(self.uri, how) from None
        return self._unwrap(answer)

    def _unwrap(self, answer: Mapping[str, Any]) -> dict[str, Any]:
        if answer.get("ok") is True:
            result = answer.get("result")
            if not isinstance(result, dict):
                raise PolicyOutputError(self.uri, f"expected a JSON object, got {type(result).__name__}")
            return result
        stage, etype, msg = answer.get("stage"), str(answer.get("type", "")), str(answer.get("message", ""))
        if stage == "output":
            raise PolicyOutputError(self.uri, msg)
        if stage == "load":
            raise PolicyLoadError(self.uri, f"{etype}: {msg}")
        raise PolicyFailed(self.uri, detail=f"{etype}: {msg}"[:400])

    async def _ensure_worker(self) -> _Worker:
        if self._worker is not None and self._worker.alive:
            return self._worker
        if self._worker is not None:
            await self._drop_worker()
        self._closed = False  # a held handle may start again; a close() during this load stops it
        worker = await self._sandbox._spawn(self.spec)  # the sandbox owns spawning
        self.restarts += 1
        s = self.spec
        try:
            answer = await worker.call({"op": "load", "code_dir": str(s.code_dir), "rule_id": s.rule_id,
                                        "settings": dict(s.settings), "parameters": dict(s.parameters)},
                                       self._sandbox.cfg.load_timeout_s)
        except TimeoutError:
            await self._sandbox._retire(worker)
            raise PolicyLoadError(self.uri, f"import and constructor took over {self._sandbox.cfg.load_timeout_s:g} s")
        except (EOFError, ValueError, TypeError):
            how = await worker.how_it_died()
            await self._sandbox._retire(worker)
            raise PolicyLoadError(self.uri, f"the worker died while loading ({how})") from None
        except BaseException:  # cancelled mid-load (a close, an eviction, a caller gone)
            self._sandbox._retire_soon(worker)
            raise
        if answer.get("ok") is not True:
            await self._sandbox._retire(worker)
            self._unwrap({**answer, "stage": "load"})
        if self._closed:  # evicted or forgotten while it loaded
            await self._sandbox._retire(worker)
            raise PolicyError(f"policy {self.uri}: its instance was stopped while it loaded")
        self._worker = worker
        return worker

    async def _drop_worker(self) -> None:
        w, self._worker = self._worker, None
        if w is not None:
            await self._sandbox._retire(w)

    async def close(self) -> None:
        self._closed = True
        await self._drop_worker()


class Sandbox:
    """`async with Sandbox(cfg) as sb: h = await sb.load(spec); await h.eval({...})`."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        self._instances: collections.OrderedDict[str, SandboxedPolicy] = collections.OrderedDict()
        self._worker_py = cfg.root / "worker.py"
        self._seq = 0
        self._closed = False
        self._prepared = False
        # Every worker process started and not yet reaped, whoever holds it: close() reaps them all,
        # so no path (a cancelled load, an eviction racing a load) leaves a child behind.
        self._workers: set[_Worker] = set()
        self._reaping: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        if self.cfg.run_as_uid is None:
            log.warning("policy sandbox runs as the daemon user: policies can read what it can read",
                        extra={"uid": os.geteuid()})
        log.info("policy sandbox configured", extra={"root": str(self.cfg.root), "python": self.cfg.python,
                                                "uid": self.cfg.run_as_uid})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        instances, self._instances = list(self._instances.values()), collections.OrderedDict()
        for inst in instances:
            await inst.close()
        for task in list(self._reaping):
            with contextlib.suppress(Exception):
                await task
        for w in list(self._workers):
            await self._retire(w)
        if self._prepared:
            await asyncio.to_thread(shutil.rmtree, self.cfg.root / "scratch", True)

    async def ensure_root(self) -> None:
        """Create the sandbox directory on first use (a node that never runs a policy leaves nothing)."""
        if not self._prepared:
            await asyncio.to_thread(self._prepare_root)
            self._prepared = True

    def _prepare_root(self) -> None:
        root = self.cfg.root
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
        st = root.lstat()
        if root.is_symlink() or st.st_uid != os.geteuid():
            raise PolicyError(f"the sandbox directory {root} is not owned by this user (or is a link); "
                              "remove it or configure another one")
        os.chmod(root, 0o755)
        for sub in ("code", "venvs"):
            (root / sub).mkdir(exist_ok=True, mode=0o755)
        scratch = root / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o755)
        tmp = root / "worker.py.tmp"
        shutil.copyfile(WORKER_SOURCE, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self._worker_py)

    async def _spawn(self, spec: LoadSpec) -> _Worker:
        self._seq += 1
        scratch = self.cfg.root / "scratch" / f"w{self._seq}"
        await asyncio.to_thread(self._make_scratch, scratch)
        worker = await _Worker.spawn(self.cfg, spec, self._worker_py, scratch)
        self._workers.add(worker)
        if self._closed:  # closed while this one was starting
            await self._retire(worker)
            raise PolicyError("the policy sandbox is closed")
        return worker

    async def _retire(self, worker: _Worker) -> None:
        """Kill `worker`, reap it and remove its scratch directory."""
        try:
            await worker.kill()
        finally:
            self._workers.discard(worker)
        await asyncio.to_thread(shutil.rmtree, worker.err_path.parent, True)

    def _retire_soon(self, worker: _Worker) -> None:
        """Kill `worker` now and reap it in a task close() waits for (the caller is being cancelled)."""
        worker.kill_now()
        task = asyncio.get_running_loop().create_task(self._retire(worker))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _make_scratch(self, scratch: Path) -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, mode=0o700)
        if self.cfg.run_as_uid is not None:
            os.chown(scratch, self.cfg.run_as_uid, self.cfg.run_as_gid if self.cfg.run_as_gid is not None else -1)

    async def load(self, spec: LoadSpec) -> SandboxedPolicy:
        """The instance for `spec` (same config = same sticky worker), started and loaded.

        Raises:
            PolicyLoadError: the code failed to import or construct (the worker is stopped).
        """
        if self._closed:
            raise PolicyError("the policy sandbox is closed")
        await self.ensure_root()
        key = spec.key
        inst = self._instances.get(key)
        if inst is None:
            inst = SandboxedPolicy(self, spec)
            self._instances[key] = inst
            await self._evict()
        self._instances.move_to_end(key)
        try:
            async with inst._lock:  # start eagerly so import errors surface at load
                await inst._ensure_worker()
        except PolicyError:
            if self._instances.get(key) is inst:
                del self._instances[key]
            raise
        return inst

    async def _evict(self) -> None:
        while len(self._instances) > self.cfg.max_workers:
            victim = next((k for k, v in self._instances.items() if not v.busy), None)
            if victim is None:
                return  # every worker is mid-call: allow a short overshoot rather than block
            inst = self._instances.pop(victim)
            await inst.close()
            log.info("policy worker evicted", extra={"policy": inst.uri})

    async def forget(self, uri: str) -> int:
        """Stop every instance of `uri` (after a delete or an update); return how many."""
        keys = [k for k, v in self._instances.items() if v.uri == uri]
        for k in keys:
            await self._instances.pop(k).close()
        return len(keys)

    def instances(self) -> list[SandboxedPolicy]:
        return list(self._instances.values())


__all__ = ["LoadSpec", "Sandbox", "SandboxConfig", "SandboxedPolicy"]
