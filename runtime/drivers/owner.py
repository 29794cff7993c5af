"""Who owns an instance, and reaping what its owner can no longer claim.

An owner is one daemon: its node id plus the data dir its driver was given. Two daemons on one host
(different data dirs, or a copied identity) have different owner ids, so neither names, adopts or
removes the other's instances. Everything a driver starts carries its owner id and data dir: podman
containers as labels, processes (process-driver instances, aiosd's `podman system service`) as
environment markers, which survive a daemon killed with SIGKILL.

At start a driver claims its data dir (an `.aiosd-owner` file naming its owner id) and reaps
orphans: what is marked with a data dir that no longer exists, or that another owner has claimed
since (removed and made again by a daemon with a new identity), so nobody will adopt it; and what
is marked as its own but that it has no record of. A live daemon's instances (its data dir present
and still its own) are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

log = logging.getLogger(__name__)

LABEL_OWNER = "aiosd.owner"
LABEL_DATA_DIR = "aiosd.data_dir"
ENV_OWNER = "AIOSD_OWNER"
ENV_DATA_DIR = "AIOSD_OWNER_DATA_DIR"
ENV_ROLE = "AIOSD_OWNER_ROLE"
ENV_INSTANCE = "AIOSD_OWNER_INSTANCE"
ROLE_INSTANCE = "instance"
ROLE_SERVICE = "podman-service"
OWNER_FILE = ".aiosd-owner"
_TERM_WAIT_S = 3.0  # orphans get SIGTERM, then SIGKILL after this long


def owner_id(node_id: str, data_dir: Path) -> str:
    """A short id for (node id, absolute data dir): stable across restarts, distinct per daemon."""
    return hashlib.sha256(f"{node_id}\0{os.path.abspath(data_dir)}".encode()).hexdigest()[:12]


def owner_env(owner: str, data_dir: Path, role: str, instance_id: str = "") -> dict[str, str]:
    """The environment markers of a process this owner starts."""
    env = {ENV_OWNER: owner, ENV_DATA_DIR: os.path.abspath(data_dir), ENV_ROLE: role}
    if instance_id:
        env[ENV_INSTANCE] = instance_id
    return env


def data_dir_gone(path: str) -> bool:
    """True when the recorded owner data dir no longer exists (an empty record counts as unknown, not gone)."""
    return bool(path) and not os.path.isdir(path)


def abandoned(path: str, owner: str) -> bool:
    """True when `owner` can no longer claim what it left under data dir `path`: the dir is gone, or its
    owner file names someone else. A dir without an owner file (made before owners) is not abandoned."""
    if data_dir_gone(path):
        return True
    if not path:
        return False
    try:
        with open(os.path.join(path, OWNER_FILE), encoding="ascii") as f:
            claimed = f.read().strip()
    except (OSError, ValueError):
        return False
    return bool(claimed) and claimed != owner


def claim(data_dir: Path, owner: str) -> None:
    """Record `owner` as the owner of `data_dir` (atomically; blocking)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / OWNER_FILE
    try:
        if path.read_text(encoding="ascii").strip() == owner:
            return
    except (OSError, ValueError):
        pass
    tmp = data_dir / (OWNER_FILE + ".tmp")
    tmp.write_text(owner + "\n", encoding="ascii")
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class Marked:
    """A live process that carries owner markers."""

    pid: int
    owner: str
    data_dir: str
    role: str
    instance_id: str
    is_service: bool  # its command line is `podman system service ...`
    leader: bool  # it leads its process group (instances and services are started in a session of their own)
    socket: str = ""  # a service's unix socket path


def scan_marked(procs: Iterable[psutil.Process] | None = None) -> list[Marked]:
    """Every live process with owner markers (processes we may not read are skipped)."""
    out: list[Marked] = []
    me = os.getpid()
    for p in procs if procs is not None else psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid == me:
                continue
            env = p.environ()
            owner = env.get(ENV_OWNER)
            if not owner:
                continue
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = p.cmdline()
            service = _is_service(cmd)
            sock = cmd[-1].removeprefix("unix://") if service and cmd[-1].startswith("unix://") else ""
            out.append(Marked(p.pid, owner, env.get(ENV_DATA_DIR, ""), env.get(ENV_ROLE, ""),
                              env.get(ENV_INSTANCE, ""), service, os.getpgid(p.pid) == p.pid, sock))
    return out


def _is_service(cmd: list[str]) -> bool:
    return len(cmd) >= 3 and os.path.basename(cmd[0]) == "podman" and cmd[1:3] == ["system", "service"]


def orphans(marked: Iterable[Marked], owner: str, is_mine_known: Callable[[Marked], bool]) -> list[Marked]:
    """The marked processes to reap: those of a gone data dir, and our own ones `is_mine_known` disowns.

    Only group leaders are chosen: an instance's own children (which inherit its markers) go with its
    process group, and a service's conmon children are left to podman, which removes them with their
    containers.
    """
    chosen = []
    for m in marked:
        if not m.leader or m.role not in (ROLE_SERVICE, ROLE_INSTANCE):
            continue
        if m.role == ROLE_SERVICE and not m.is_service:
            continue
        if abandoned(m.data_dir, m.owner) or (m.owner == owner and not is_mine_known(m)):
            chosen.append(m)
    return chosen


def reap(victims: Iterable[Marked], term_wait_s: float = _TERM_WAIT_S) -> list[int]:
    """SIGTERM each victim's process group, SIGKILL what is left after `term_wait_s`, then remove
    the per-instance cgroups (limits.py) they were in; the pids reaped. Blocking: call it in a thread."""
    procs: list[psutil.Process] = []
    cgroups: list[Path] = []
    for m in victims:
        try:
            p = psutil.Process(m.pid)
            cgroups += own_cgroup_dirs(Path(f"/proc/{m.pid}/cgroup").read_text(encoding="utf-8"))
        except (psutil.Error, OSError):
            continue
        procs.append(p)
        _signal(p, signal.SIGTERM)
        log.warning("reaping an orphan", extra={"pid": m.pid, "role": m.role, "owner": m.owner,
                                                "data_dir": m.data_dir, "instance": m.instance_id})
    _gone, alive = psutil.wait_procs(procs, timeout=term_wait_s)
    for p in alive:
        _signal(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=term_wait_s)
    for d in cgroups:
        with contextlib.suppress(OSError):  # busy (a child still exiting) or already gone: left as it is
            d.rmdir()
    return [p.pid for p in procs]


def own_cgroup_dirs(proc_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """The per-instance cgroup dirs (named aiosd-*) in a /proc/PID/cgroup text."""
    out = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1] and os.path.basename(parts[2]).startswith("aiosd-"):
            controller = parts[1].split(",")[0].removeprefix("name=")
            out.append(root / controller / parts[2].lstrip("/"))
    return out


def _signal(p: psutil.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
        if p.is_running():  # same pid *and* start time: never a reused pid
            os.killpg(p.pid, sig)  # victims lead their group (see orphans)
