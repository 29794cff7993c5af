"""Podman driver: block instances as containers through Podman's REST API (podman-py).

aiosd runs its own `podman system service` on a socket under the data dir (with the
containers.conf of podman_conf.py) unless one already answers there. Containers are named
`aiosd-<owner>-<instance>` and carry aiosd.* labels with their owner (owner.py: node id + data
dir), so two daemons on one host never touch each other's; they run with `--init`, no network
(the task socket's directory is mounted at /run/aiosd) and the spec's limits, mounts and GPUs.
At start the driver reaps services and containers whose owner data dir is gone. podman-py is
synchronous, so every call goes through a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Self

from podman import PodmanClient
from podman.errors import APIError, NotFound
from podman.errors import ImageNotFound as PodmanImageNotFound

from runtime.drivers import owner as own
from runtime.drivers.base import (
    CONTAINER_SOCKET_DIR,
    LABEL_BLOCK,
    LABEL_DIGEST,
    LABEL_INSTANCE,
    LABEL_NODE,
    LABEL_SOCKET,
    SOCKET_NAME,
    Observed,
    instance_env,
)
from runtime.errors import DriverUnavailable, ImageNotFound, InstanceNotFound, InstanceStartError
from runtime.images import BASE_LATEST
from runtime.podman_conf import podman_env, write_containers_conf
from runtime.spec import Endpoint, GpuDevice, InstanceSpec

log = logging.getLogger(__name__)

LABEL_STARTED = "aiosd.started"
BLOCK_MOUNT = "/block"
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
_SERVICE_START_S = 30.0  # podman system service is up in well under a second; a loaded box is slow
_SUN_PATH_MAX = 107
_CPU_PERIOD_US = 100_000  # the kernel's default CFS period
_CATCH_UP = 20  # lines compared to find where a ended follow stream left off
_FOLLOW_QUEUE = 1000  # log lines buffered for a slow `logs -f` reader; the reader thread waits when full


def nvidia_cdi_present(dirs: tuple[Path, ...] = CDI_DIRS) -> bool:
    """True when a CDI spec for nvidia.com/gpu exists (then GPUs go by CDI name)."""
    for d in dirs:
        if d.is_dir():
            for f in d.iterdir():
                if f.suffix in (".yaml", ".yml", ".json") and "nvidia.com/gpu" in f.read_text(errors="replace"):
                    return True
    return False


def gpu_devices(gpus: tuple[GpuDevice, ...], cdi: bool) -> list[str]:
    """The --device values for `gpus`: CDI names, or the /dev/nvidia* nodes that exist."""
    if not gpus:
        return []
    if cdi:
        return [f"nvidia.com/gpu={g.index}" for g in gpus]
    nodes = [f"/dev/nvidia{g.index}" for g in gpus]
    nodes += ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    return [n for n in nodes if Path(n).exists()]


def container_name(instance_id: str, owner: str) -> str:
    """The container of `instance_id` started by `owner` (owner.owner_id)."""
    return f"aiosd-{owner}-{instance_id}"


def legacy_container_name(instance_id: str) -> str:
    """The name before containers had owners; such containers of our node id are still ours."""
    return f"aiosd-{instance_id}"


class PodmanDriver:
    """Containers through the REST API of aiosd's own podman service."""

    name = "podman"

    def __init__(self, data_dir: Path, node_id: str, cluster_id: str = "default", *, binary: str = "podman",
                 service_socket: Path | None = None, read_only_root: bool = False) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.binary = binary
        self.data_dir = data_dir
        self.owner = own.owner_id(node_id, data_dir)
        self._legacy: dict[str, str] = {}  # instance id → name of an adopted container from before owners
        self.dir = data_dir / "podman"
        sock = service_socket or self.dir / "podman.sock"
        self._short_dir: Path | None = None
        if len(str(sock).encode()) > _SUN_PATH_MAX:  # long data dirs (tests): a short, stable path
            self._short_dir = Path("/tmp") / ("aiosd-podman-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:12])
            sock = self._short_dir / "podman.sock"
        self.socket = sock
        self.read_only_root = read_only_root
        self._service: subprocess.Popen[bytes] | None = None
        self._client: PodmanClient | None = None
        self._cdi = False
        self.conf: Path | None = None

    # lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if shutil.which(self.binary) is None:
            raise DriverUnavailable(f"{self.binary!r} is not installed; install podman and runc, "
                                    "or set runtime.driver = \"process\"")
        self.conf = await asyncio.to_thread(write_containers_conf, self.dir)
        await asyncio.to_thread(self.socket.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(own.claim, self.data_dir, self.owner)
        self._client = PodmanClient(base_url=f"unix://{self.socket}")
        reachable = await asyncio.to_thread(self._ping)
        # Services of abandoned data dirs (one may answer on our socket path: a previous daemon's
        # there), and our own when it does not answer; then look again.
        if await asyncio.to_thread(self._reap_processes, reachable):
            reachable = await asyncio.to_thread(self._ping)
        if not reachable:
            await self._start_service()
        self._cdi = await asyncio.to_thread(nvidia_cdi_present)
        await self.reap_orphans()
        return self

    def _reap_processes(self, reachable: bool) -> list[int]:
        def known(m: own.Marked) -> bool:
            return m.role != own.ROLE_SERVICE or reachable  # instances are the process driver's business
        victims = own.orphans(own.scan_marked(), self.owner, known)
        reaped = own.reap(victims)
        for m in victims:  # the short socket dir a long data dir's service had under /tmp
            short = Path(m.socket).parent
            if m.is_service and short.parent == Path("/tmp") and short.name.startswith("aiosd-podman-") \
                    and short != self.socket.parent:
                shutil.rmtree(short, ignore_errors=True)
        return reaped

    async def reap_orphans(self) -> list[str]:
        """Remove containers (of any aiosd owner) whose owner data dir is gone or claimed by another owner;
        their names."""
        return await asyncio.to_thread(self._reap_containers)

    def _reap_containers(self) -> list[str]:
        reaped = []
        for c in self._c.containers.list(all=True, filters={"label": own.LABEL_OWNER}):
            labels = c.attrs.get("Labels") or {}
            if not own.abandoned(str(labels.get(own.LABEL_DATA_DIR, "")), str(labels.get(own.LABEL_OWNER, ""))):
                continue
            name = str(c.attrs.get("Names", [c.name])[0] if c.attrs.get("Names") else c.name)
            log.warning("removing an orphan container", extra={
                "container": name, "owner": labels.get(own.LABEL_OWNER), "data_dir": labels.get(own.LABEL_DATA_DIR)})
            with contextlib.suppress(NotFound, APIError):
                c.remove(force=True)
                reaped.append(name)
        return reaped

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client and stop the service we started; containers keep running (conmon owns them)."""
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]  # podman-py leaves it unannotated
            self._client = None
        svc, self._service = self._service, None
        if svc is not None and svc.poll() is None:
            svc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(svc.wait), timeout=10)
            except TimeoutError:
                svc.kill()
                await asyncio.to_thread(svc.wait)
            if self._short_dir is not None:
                await asyncio.to_thread(shutil.rmtree, self._short_dir, True)

    def _ping(self) -> bool:
        try:
            return bool(self._c.ping())
        except Exception:  # noqa: BLE001  # any failure means "no service here yet"
            return False

    async def _start_service(self) -> None:
        self.socket.unlink(missing_ok=True)
        logf = self.dir / "service.log"
        try:
            self._service = await asyncio.to_thread(self._spawn_service, logf)
        except OSError as e:
            raise DriverUnavailable(f"cannot start podman system service: {e}") from e
        deadline = time.monotonic() + _SERVICE_START_S
        while not await asyncio.to_thread(self._ping):
            if self._service.poll() is not None or time.monotonic() > deadline:
                tail = logf.read_text(errors="replace")[-2000:]
                raise DriverUnavailable(f"podman system service did not come up on {self.socket}: {tail}")
            await asyncio.sleep(0.05)
        log.info("podman service started", extra={"socket": str(self.socket), "pid": self._service.pid})

    def _spawn_service(self, logf: Path) -> subprocess.Popen[bytes]:
        # cwd: conmon leaves an `oom` file in its working directory when a container is OOM-killed
        env = podman_env(self.conf)
        # The service would otherwise answer systemd's READY=1 for us before we are ready.
        env.pop("NOTIFY_SOCKET", None)
        env.update(own.owner_env(self.owner, self.data_dir, own.ROLE_SERVICE))  # found again after a kill -9
        with open(logf, "ab") as out:
            return subprocess.Popen(
                [self.binary, "system", "service", "--time=0", f"unix://{self.socket}"], env=env, cwd=self.dir,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def _c(self) -> PodmanClient:
        if self._client is None:
            raise DriverUnavailable("the podman driver is not open")
        return self._client

    # Driver ----------------------------------------------------------------------------
    def _image_of(self, spec: InstanceSpec) -> str:
        return spec.image or BASE_LATEST

    async def check_image(self, spec: InstanceSpec) -> None:
        image = self._image_of(spec)
        if not await asyncio.to_thread(self._c.images.exists, image):
            raise ImageNotFound(image)

    async def start(self, spec: InstanceSpec, socket_dir: str, gpus: tuple[GpuDevice, ...]) -> Observed:
        return await asyncio.to_thread(self._start, spec, socket_dir, gpus)

    def _start(self, spec: InstanceSpec, socket_dir: str, gpus: tuple[GpuDevice, ...]) -> Observed:
        image = self._image_of(spec)
        name = container_name(spec.instance_id, self.owner)
        for old in {name, self._legacy.pop(spec.instance_id, name)}:  # ours only: the name holds our owner id
            with contextlib.suppress(NotFound):
                self._c.containers.get(old).remove(force=True)
        started = time.time()
        host_sock = str(Path(socket_dir) / SOCKET_NAME)
        labels = {LABEL_BLOCK: spec.block_id, LABEL_INSTANCE: spec.instance_id, LABEL_NODE: self.node_id,
                  own.LABEL_OWNER: self.owner, own.LABEL_DATA_DIR: os.path.abspath(self.data_dir),
                  LABEL_DIGEST: spec.digest(), LABEL_SOCKET: host_sock, LABEL_STARTED: repr(started)}
        env = instance_env(spec, self.node_id, self.cluster_id, f"{CONTAINER_SOCKET_DIR}/{SOCKET_NAME}", gpus)
        mounts: list[dict[str, Any]] = [
            {"type": "bind", "source": socket_dir, "target": CONTAINER_SOCKET_DIR, "read_only": False}]
        kwargs: dict[str, Any] = {}
        if spec.block_dir is not None:
            mounts.append({"type": "bind", "source": str(spec.block_dir), "target": BLOCK_MOUNT, "read_only": True})
            kwargs["working_dir"] = BLOCK_MOUNT
        mounts += [{"type": "bind", "source": str(m.source), "target": m.target, "read_only": m.read_only}
                   for m in spec.mounts]
        r = spec.resources
        if r.cpus is not None:
            # podman-py drops nano_cpus on the libpod API; quota/period is what `--cpus` sets anyway
            kwargs["cpu_period"] = _CPU_PERIOD_US
            kwargs["cpu_quota"] = int(r.cpus * _CPU_PERIOD_US)
        if r.memory_mb is not None:
            kwargs["mem_limit"] = f"{r.memory_mb}m"
        if r.pids is not None:
            kwargs["pids_limit"] = r.pids
        devices = gpu_devices(gpus, self._cdi)
        if devices:
            kwargs["devices"] = devices
        if spec.command:
            kwargs["command"] = list(spec.command)
        try:
            c = self._c.containers.create(
                image, name=name, labels=labels, environment=env, mounts=mounts, init=True,
                network_mode="none", read_only=self.read_only_root, **kwargs)
            c.start()
        except PodmanImageNotFound:
            raise ImageNotFound(image) from None
        except APIError as e:
            if "image not known" in str(e) or "no such image" in str(e).lower():
                raise ImageNotFound(image) from None
            raise InstanceStartError(f"instance {spec.instance_id}: podman refused to start it: {e}") from e
        log.info("container started", extra={"instance": spec.instance_id, "container": c.id[:12],
                                              "image": image})
        return Observed(spec.block_id, spec.instance_id, c.id[:12], spec.digest(), Endpoint(socket=Path(host_sock)),
                        True, None, started)

    async def list_owned(self) -> Mapping[str, Observed]:
        return await asyncio.to_thread(self._list_owned)

    def _list_owned(self) -> dict[str, Observed]:
        out: dict[str, Observed] = {}
        legacy: dict[str, str] = {}
        for c in self._c.containers.list(all=True, filters={"label": f"{LABEL_NODE}={self.node_id}"}):
            a = c.attrs
            labels = a.get("Labels") or {}
            iid = labels.get(LABEL_INSTANCE)
            if not iid or LABEL_SOCKET not in labels:
                continue
            if own.LABEL_OWNER in labels:
                if labels[own.LABEL_OWNER] != self.owner:
                    continue  # another daemon with our node id (a copied identity): not ours
            elif legacy_container_name(iid) in (a.get("Names") or [c.name]):
                legacy[iid] = legacy_container_name(iid)  # started before owners existed: ours by node id
            else:
                continue
            state = str(a.get("State", ""))
            alive = state in ("running", "created", "configured", "initialized", "paused", "stopping")
            code = a.get("ExitCode")
            try:
                started = float(labels.get(LABEL_STARTED, "0"))
            except ValueError:
                started = 0.0
            out[iid] = Observed(labels.get(LABEL_BLOCK, ""), iid, str(a.get("Id", ""))[:12],
                                labels.get(LABEL_DIGEST, ""), Endpoint(socket=Path(labels[LABEL_SOCKET])), alive,
                                None if alive or code is None else int(code), started)
        self._legacy = legacy
        return out

    def container_name(self, instance_id: str) -> str:
        """The name of this driver's container for `instance_id`."""
        return self._legacy.get(instance_id) or container_name(instance_id, self.owner)

    async def stop(self, instance_id: str, timeout_s: float) -> None:
        def stop() -> None:
            with contextlib.suppress(NotFound):
                self._c.containers.get(self.container_name(instance_id)).stop(timeout=max(0, int(timeout_s)), ignore=True)
        await asyncio.to_thread(stop)

    async def remove(self, instance_id: str) -> None:
        def remove() -> None:
            with contextlib.suppress(NotFound):
                self._c.containers.get(self.container_name(instance_id)).remove(force=True)
        await asyncio.to_thread(remove)

    async def kill(self, instance_id: str, signal: str = "KILL") -> None:
        def kill() -> None:
            try:
                self._c.containers.get(self.container_name(instance_id)).kill(signal)
            except NotFound:
                raise InstanceNotFound(instance_id) from None
        await asyncio.to_thread(kill)

    async def last_lines(self, instance_id: str, n: int) -> tuple[str, ...]:
        def tail() -> tuple[str, ...]:
            try:
                frames = self._c.containers.get(self.container_name(instance_id)).logs(tail=n)
            except NotFound:
                return ()
            data = frames if isinstance(frames, bytes) else b"".join(frames)
            return tuple([ln for ln in data.decode(errors="replace").splitlines() if ln.strip()][-n:])
        return await asyncio.to_thread(tail)

    async def logs(self, instance_id: str, tail: int = 100, follow: bool = False) -> AsyncIterator[str]:
        try:
            c = await asyncio.to_thread(self._c.containers.get, self.container_name(instance_id))
        except NotFound:
            raise InstanceNotFound(instance_id) from None
        if not follow:
            for line in await self.last_lines(instance_id, tail):
                yield line
            return
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[str | None] = asyncio.Queue(_FOLLOW_QUEUE)
        stop = False

        def pump() -> None:
            try:
                frames = c.logs(stream=True, follow=True, tail=tail)
                for chunk in [frames] if isinstance(frames, bytes) else frames:
                    if stop:
                        return
                    for line in chunk.decode(errors="replace").splitlines():
                        asyncio.run_coroutine_threadsafe(q.put(line), loop).result()
            except (APIError, OSError, RuntimeError):
                pass
            finally:
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(q.put(None), loop)

        reader = asyncio.ensure_future(asyncio.to_thread(pump))
        recent: list[str] = []
        try:
            while (item := await q.get()) is not None:
                recent = [*recent[-(_CATCH_UP - 1):], item]
                yield item
        finally:
            stop = True
            reader.cancel()
        # podman 4.3 can end a follow stream at container exit before its last lines are read:
        # catch up from a plain tail, after the last lines we already gave out.
        for line in _after(recent, await self.last_lines(instance_id, _CATCH_UP * 2)):
            yield line


def _after(seen: list[str], tail: tuple[str, ...]) -> list[str]:
    """The lines of `tail` that come after the longest suffix of `seen` found in it."""
    for k in range(len(seen), 0, -1):
        suffix = seen[-k:]
        for i in range(len(tail) - k, -1, -1):
            if list(tail[i:i + k]) == suffix:
                return list(tail[i + k:])
    return list(tail) if not seen else []


def podman_available(binary: str = "podman") -> bool:
    path = shutil.which(binary)
    return path is not None and os.access(path, os.X_OK)

