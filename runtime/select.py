"""Choose the instance driver from configuration: podman, process, or auto (podman when usable).

`auto` falls back to the process driver, with one WARNING that says why, when podman is not
installed or its service does not come up. An explicit `podman` never falls back.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from runtime.drivers.base import Driver
from runtime.drivers.podman import PodmanDriver
from runtime.drivers.process import ProcessDriver
from runtime.errors import DriverUnavailable, SpecError

log = logging.getLogger(__name__)

DriverKind = Literal["auto", "podman", "process"]


def podman_missing(binary: str = "podman") -> str:
    """'' when podman looks usable here, else the reason it is not."""
    if shutil.which(binary) is None:
        return f"{binary} is not installed"
    if shutil.which("runc") is None:
        return "runc is not installed (podman's crun fails on hybrid cgroups; apt-get install runc)"
    return ""


@asynccontextmanager
async def open_driver(kind: str, data_dir: Path, node_id: str, cluster_id: str = "default"
                      ) -> AsyncIterator[Driver]:
    """Open the configured driver for the lifetime of the `async with`.

    Raises: SpecError for an unknown kind; DriverUnavailable when `podman` was asked for and cannot run.
    """
    if kind not in ("auto", "podman", "process"):
        raise SpecError("runtime.driver", f"{kind!r} is not one of auto, podman, process")
    if kind == "process":
        async with ProcessDriver(data_dir, node_id, cluster_id) as p:
            yield p
        return
    why = podman_missing()
    if why and kind == "podman":
        raise DriverUnavailable(f"runtime.driver is podman, but {why}")
    if not why:
        pod = PodmanDriver(data_dir, node_id, cluster_id)
        try:
            await pod.__aenter__()
        except DriverUnavailable as e:
            if kind == "podman":
                raise
            why = str(e)
        else:
            try:
                yield pod
            finally:
                await pod.close()
            return
    log.warning("podman unavailable; using the process driver", extra={"reason": why})
    async with ProcessDriver(data_dir, node_id, cluster_id) as p:
        yield p
