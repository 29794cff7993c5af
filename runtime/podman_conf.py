"""The containers.conf aiosd hands to every podman it runs (service, build, import).

On hosts like the CI machine, crun fails on hybrid cgroups and the default nofile/nproc
ulimits exceed the hard limits root may set; runc plus two ulimits works (machine-notes §1).
This module writes the file; it does not run podman.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from pathlib import Path


def containers_conf_text(runtime: str = "runc") -> str:
    """A containers.conf whose ulimits never exceed this process's hard limits."""
    nofile = _cap(resource.RLIMIT_NOFILE, 1_048_576)
    nproc = min(_cap(resource.RLIMIT_NPROC, 32_768), 32_768)  # podman lowers its own NPROC to 32768
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "\n[engine]\n"
        f'runtime = "{runtime}"\n'
    )


def _cap(which: int, wanted: int) -> int:
    _soft, hard = resource.getrlimit(which)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def write_containers_conf(directory: Path, runtime: str = "runc") -> Path:
    """Write `containers.conf` into `directory` (atomically) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "containers.conf"
    text = containers_conf_text(runtime)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def podman_env(conf: Path | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a podman subprocess: the caller's, plus CONTAINERS_CONF when given."""
    env = dict(os.environ if base is None else base)
    if conf is not None:
        env["CONTAINERS_CONF"] = str(conf)
    return env
