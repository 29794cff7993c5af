"""Resource limits of process-driver instances: cgroup v1 like Podman's, rlimits where cgroups are not writable.

An instance with `resources` gets one cgroup per controller it needs (cpu: cfs quota/period as
`--cpus` sets them; memory: limit_in_bytes, and memsw the same so it cannot swap past it; pids:
pids.max), created beside the daemon's own cgroup of that controller. The child is moved in by a
small `sh` wrapper before it execs the block, so everything it allocates is charged. Where a
needed controller is missing or not writable, memory falls back to RLIMIT_DATA (set by the same
wrapper with `ulimit -d`); a CPU quota and a pids limit cannot be had from rlimits, and the
instance's limits mode says so ("rlimit", with a warning in the log).

`plan()` is pure; `CgroupLimits` does the file work (blocking: call it in a thread).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.spec import Resources

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000  # the kernel's default CFS period (what podman's --cpus uses)
MODE_NONE, MODE_CGROUP, MODE_RLIMIT = "none", "cgroup", "rlimit"
_RMDIR_WAIT_S = 2.0  # a killed group's cgroup empties a moment after the last process is reaped

# $1.. are cgroup.procs files up to "--", then the command; each write moves the shell itself.
_WRAP = ('for f in "$@"; do shift; [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; done; '
         '[ -n "$AIOSD_LIMIT_DATA_KB" ] && { ulimit -d "$AIOSD_LIMIT_DATA_KB" || exit 125; }; '
         'unset AIOSD_LIMIT_DATA_KB; exec "$@"')


def plan(r: Resources) -> dict[str, dict[str, str]]:
    """The cgroup v1 files to write for `r`, per controller, in write order."""
    out: dict[str, dict[str, str]] = {}
    if r.cpus is not None:
        out["cpu"] = {"cpu.cfs_period_us": str(CPU_PERIOD_US), "cpu.cfs_quota_us": str(int(r.cpus * CPU_PERIOD_US))}
    if r.memory_mb is not None:
        b = str(r.memory_mb << 20)
        out["memory"] = {"memory.limit_in_bytes": b, "memory.memsw.limit_in_bytes": b}
    if r.pids is not None:
        out["pids"] = {"pids.max": str(r.pids)}
    return out


def wrap(cmd: Sequence[str], procs_files: Sequence[str]) -> list[str]:
    """`cmd` started through the wrapper that joins `procs_files` (cgroup.procs) and applies the
    RLIMIT_DATA given in the environment (AIOSD_LIMIT_DATA_KB), then execs `cmd` (same pid)."""
    return ["/bin/sh", "-c", _WRAP, "aiosd-limits", *procs_files, "--", *cmd]


def own_cgroup(controller: str, proc_cgroup: str) -> str:
    """This process's path in `controller`'s v1 hierarchy, from /proc/self/cgroup text ('/' if unknown)."""
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            return parts[2] or "/"
    return "/"


@dataclass(frozen=True, slots=True)
class Applied:
    """What an instance got: its mode, the cgroup dirs made for it, the wrapper's inputs."""

    mode: str
    dirs: tuple[str, ...] = ()
    procs_files: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    unenforced: tuple[str, ...] = ()  # resources that the mode could not enforce


class CgroupLimits:
    """Makes and removes the per-instance cgroups under `root` (the v1 mount point)."""

    def __init__(self, root: Path = CGROUP_ROOT, *, force_rlimit: bool = False) -> None:
        self.root = root
        self.force_rlimit = force_rlimit

    def apply(self, name: str, r: Resources) -> Applied:
        """Create cgroup `name` for each controller `r` needs and write its limits; fall back to rlimits."""
        files = plan(r)
        if not files:
            return Applied(MODE_NONE)
        if not self.force_rlimit:
            made: list[Path] = []
            try:
                self_cg = Path("/proc/self/cgroup").read_text(encoding="utf-8")
                for controller, values in files.items():
                    d = self.root / controller / own_cgroup(controller, self_cg).lstrip("/") / name
                    _fresh(d)
                    made.append(d)
                    for f, v in values.items():
                        if f == "memory.memsw.limit_in_bytes" and not (d / f).exists():
                            continue  # swap accounting off in this kernel: memory alone
                        (d / f).write_text(v, encoding="ascii")
                return Applied(MODE_CGROUP, tuple(map(str, made)), tuple(str(d / "cgroup.procs") for d in made))
            except OSError as e:
                for d in reversed(made):
                    _rmdir(d, 0)
                log.warning("cgroups not writable; using rlimits (no CPU quota or pids limit)",
                            extra={"cgroup": name, "error": str(e)})
        env = {"AIOSD_LIMIT_DATA_KB": str(r.memory_mb << 10)} if r.memory_mb is not None else {}
        unenforced = tuple(k for k, v in (("cpus", r.cpus), ("pids", r.pids)) if v is not None)
        return Applied(MODE_RLIMIT, env=env, unenforced=unenforced)

    @staticmethod
    def remove(dirs: Sequence[str], wait_s: float = _RMDIR_WAIT_S) -> None:
        """Remove the instance's cgroups (waits briefly for a just-killed group to empty)."""
        for d in dirs:
            _rmdir(Path(d), wait_s)


def _fresh(d: Path) -> None:
    if d.is_dir():  # left from an earlier run of the same instance: start from clean limits
        _rmdir(d, 0)
    d.mkdir(exist_ok=True)  # the parent is the daemon's own cgroup; missing = controller not mounted


def _rmdir(d: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                log.warning("cgroup not removed", extra={"cgroup": str(d), "error": str(e)})
                return
            time.sleep(0.02)
