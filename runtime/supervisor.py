"""Instance supervisor: reconcile desired instances with what the driver runs.

Starts missing instances, restarts dead or unhealthy ones with exponential back-off (a
visible `crashloop` state), adopts instances a previous daemon started (same id + spec
digest) and removes what is no longer desired. The desired set is persisted under the data
dir (desired_store.py), so a restarted daemon knows it before anyone calls `set_desired` again.
A slot's pure transitions (exit, back-off, healthy) and the configuration live in slots.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from runtime.client import InstanceClient
from runtime.desired_store import fresh_socket_dir, load_desired, save_desired
from runtime.drivers.base import SOCKET_NAME, Driver, Observed
from runtime.errors import AiosdRuntimeError, DriverError, ImageNotFound, InstanceNotFound, SpecError
from runtime.gpus import GpuBook
from runtime.slots import Slot, SupervisorConfig, backoff, check_gpus, check_specs, mark_healthy, on_exit
from runtime.spec import Endpoint, InstanceSpec, InstanceState, InstanceStatus

__all__ = ["Supervisor", "SupervisorConfig"]

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, minus the NUL
_PROBE_INTERVAL_S = 0.02  # start → healthy polling; a refused unix connect costs microseconds


@dataclass(slots=True)
class _Desired:
    blocks: dict[str, list[InstanceSpec]] = field(default_factory=dict)


class Supervisor:
    """`async with Supervisor(cfg, driver) as sup: await sup.set_desired(block, specs)`."""

    def __init__(self, cfg: SupervisorConfig, driver: Driver, gpus: GpuBook | None = None,
                 client: InstanceClient | None = None) -> None:
        self.cfg = cfg
        self.driver = driver
        self.gpus = gpus or GpuBook(())
        self._client = client or InstanceClient()
        self._own_client = client is None
        self._slots: dict[str, Slot] = {}
        self._desired = _Desired()
        self._removing: set[str] = set()
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # loop + in-flight operations, cancelled on close
        self._lock = asyncio.Lock()
        self._state_file = cfg.data_dir / "supervisor" / "desired.json"
        self._sock_root = cfg.socket_dir or cfg.data_dir / "sock"
        self.ticks = 0
        # The driver owned nothing at the last look, taken while idle (see _idle). Nothing can start
        # then, so an idle node stops asking (a thread hop and a directory scan, or a Podman call,
        # 4 times a second) until set_desired changes something.
        self._none_owned = False

    # lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        probe = str(self._sock_root / ("x" * 12) / SOCKET_NAME)
        if len(probe.encode()) > _SUN_PATH_MAX:
            raise DriverError(f"socket_dir {self._sock_root} is too long for unix sockets "
                              f"({len(probe.encode())} > {_SUN_PATH_MAX} bytes); configure a shorter one")
        await asyncio.to_thread(self._sock_root.mkdir, parents=True, exist_ok=True)
        await self._load_desired()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._track(self._tg.create_task(self._run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop supervising; instances keep running so that the next daemon adopts them."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tg.__aexit__(None, None, None)
        if self._own_client:
            await self._client.close()

    # API -------------------------------------------------------------------------------
    async def set_desired(self, block_id: str, specs: Sequence[InstanceSpec]) -> None:
        """Make `specs` the block's instances on this node (empty = remove them all).

        Checks everything first and changes nothing on error.
        Raises: SpecError, ImageNotFound, NoGpuError, GpuUnavailable.
        """
        async with self._lock:
            ids = await asyncio.to_thread(check_specs, block_id, specs, self._slots)  # stats paths
            old = {s.instance_id for s in self._desired.blocks.get(block_id, [])}
            if len(self._slots) - len(old) + len(ids) > self.cfg.max_instances:
                raise SpecError("specs", f"this node runs at most {self.cfg.max_instances} instances")
            new_or_changed = [s for s in specs
                              if s.instance_id not in self._slots or self._slots[s.instance_id].digest != s.digest()]
            for s in new_or_changed:
                await self.driver.check_image(s)
            check_gpus(self.gpus, self._slots, new_or_changed, leaving=old - ids)
            if specs:
                self._desired.blocks[block_id] = list(specs)
            else:
                self._desired.blocks.pop(block_id, None)
            await self._save_desired()
            for iid in old - ids:
                slot = self._slots.pop(iid)
                self.gpus.release(iid)
                slot.generation += 1
                log.info("instance no longer desired", extra={"block": block_id, "instance": iid})
            for s in specs:
                self._apply_spec(s)
        self._none_owned = False  # look again: a removed slot's instance is stopped as an orphan by _tick
        self._wake.set()

    def _apply_spec(self, s: InstanceSpec) -> None:
        prev = self._slots.get(s.instance_id)
        if prev is not None and prev.digest == s.digest():
            return
        self.gpus.release(s.instance_id)
        gpus = self.gpus.allocate(s.instance_id, s.gpus) if s.gpus.wanted else ()
        short = hashlib.sha256(s.instance_id.encode()).hexdigest()[:12]
        slot = Slot(spec=s, digest=s.digest(), socket_dir=self._sock_root / short, gpus=gpus)
        if prev is not None:  # changed spec: keep history, the tick replaces the running one
            slot.restarts, slot.ever_started, slot.obs, slot.running = prev.restarts, True, prev.obs, prev.running
            prev.generation += 1
        self._slots[s.instance_id] = slot

    def desired(self, block_id: str) -> list[InstanceSpec]:
        """The block's desired instance specs on this node ([] when none)."""
        return list(self._desired.blocks.get(block_id, []))

    def desired_blocks(self) -> list[str]:
        """The ids of the blocks with desired instances here, sorted."""
        return sorted(self._desired.blocks)

    def healthy(self, block_id: str) -> list[tuple[str, Endpoint]]:
        return [(iid, s.endpoint) for iid, s in self._slots.items()
                if s.spec.block_id == block_id and s.state is InstanceState.HEALTHY]

    def status(self) -> list[InstanceStatus]:
        """A snapshot for `aiosd ps`, sorted by block then instance."""
        out = []
        for iid, s in sorted(self._slots.items(), key=lambda kv: (kv[1].spec.block_id, kv[0])):
            out.append(InstanceStatus(
                block_id=s.spec.block_id, instance_id=iid, state=s.state, restarts=s.restarts,
                last_exit=s.last_exit, last_log_lines=s.last_lines,
                started_at=s.obs.started_at if s.obs is not None and s.running else None,
                endpoint=s.endpoint if s.running else None, gpus=s.gpus, driver=self.driver.name,
                handle=s.obs.handle if s.obs is not None and s.running else "", error=s.error))
        return out

    async def logs(self, instance_id: str, tail: int = 100, follow: bool = False) -> AsyncIterator[str]:
        """The instance's output; for a run that has printed nothing yet (a crash-looping instance
        between restarts), the previous run's last lines. Raises InstanceNotFound."""
        slot = self._slots.get(instance_id)
        if not follow and slot is not None:
            lines = [line async for line in self.driver.logs(instance_id, tail, follow)]
            for line in lines or list(slot.last_lines[-tail:]):
                yield line
            return
        async for line in self.driver.logs(instance_id, tail, follow):
            yield line

    # persistence ------------------------------------------------------------------------
    async def _save_desired(self) -> None:
        await asyncio.to_thread(save_desired, self._state_file, dict(self._desired.blocks))

    async def _load_desired(self) -> None:
        blocks = await asyncio.to_thread(load_desired, self._state_file)
        self._desired.blocks = blocks
        for specs in blocks.values():
            for s in specs:
                try:
                    self._apply_spec(s)
                except AiosdRuntimeError as e:  # e.g. the GPU it held is gone
                    log.error("stored instance cannot run here", extra={"instance": s.instance_id, "error": str(e)})

    # reconcile loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervisor tick failed")
            self.ticks += 1
            # Idle with nothing owned: sleep until set_desired wakes us instead of ticking for nothing.
            tick_s = None if self._none_owned and self._idle() else self.cfg.tick_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick_s):
                    await self._wake.wait()

    def _spawn(self, coro: Coroutine[Any, Any, None], slot: Slot | None = None) -> None:
        assert self._tg is not None  # only called from the loop
        self._track(self._tg.create_task(self._guard(coro, slot)))

    def _track(self, t: asyncio.Task[None]) -> None:
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, None], slot: Slot | None) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("instance operation failed", extra={"instance": slot.spec.instance_id if slot else ""})
        finally:
            if slot is not None:
                slot.busy = False

    async def _tick(self) -> None:
        # A slot that started, exited or changed while the driver was being asked is judged on
        # the next tick: its observation may predate the change (e.g. a start that just finished).
        idle = self._idle()
        if self._none_owned and idle:
            return
        before = {iid: (slot, slot.generation) for iid, slot in self._slots.items()}
        observed = await self.driver.list_owned()
        self._none_owned = idle and not observed and self._idle()  # nothing could start during the look
        now = time.monotonic()
        for iid in observed:
            if iid not in self._slots and iid not in self._removing:
                self._removing.add(iid)
                self._spawn(self._remove(iid))
        for iid, slot in list(self._slots.items()):
            seen = before.get(iid)
            if slot.busy or seen is None or seen[0] is not slot or seen[1] != slot.generation:
                continue
            self._step(slot, observed.get(iid), now)

    def _idle(self) -> bool:
        """No slot, no removal and no operation in flight (only the loop task): nothing can start."""
        return not self._slots and not self._removing and len(self._tasks) <= 1

    def _step(self, slot: Slot, obs: Observed | None, now: float) -> None:
        alive = obs is not None and obs.alive
        if alive and obs is not None and obs.digest != slot.digest:
            log.info("instance spec changed; replacing", extra={"instance": slot.spec.instance_id})
            slot.busy = True
            self._spawn(self._replace(slot), slot)
            return
        if slot.running and not alive:
            on_exit(self.cfg, slot, obs, now)
            slot.busy = True
            self._spawn(self._capture_exit(slot), slot)
            return
        if not slot.running and alive and obs is not None:  # adopt what a previous daemon started
            slot.obs, slot.running, slot.ever_started = obs, True, True
            slot.state = InstanceState.RUNNING
            slot.started_mono = now
            slot.generation += 1
            log.info("instance adopted", extra={"instance": slot.spec.instance_id, "handle": obs.handle})
            self._probe(slot)
            return
        if not slot.running:
            if now >= slot.next_start:
                slot.busy = True
                self._spawn(self._start(slot), slot)
            return
        # running and alive
        if obs is not None:
            slot.obs = obs
        if (slot.state is InstanceState.HEALTHY and slot.healthy_since is not None
                and now - slot.healthy_since >= self.cfg.backoff_reset_s):
            slot.failures = 0
        if slot.state in (InstanceState.HEALTHY, InstanceState.UNHEALTHY):
            if now >= slot.next_health:
                slot.busy = True
                self._spawn(self._health(slot), slot)
        elif not slot.probing:
            if now - slot.started_mono > slot.spec.health.start_timeout_s:
                slot.error = f"not healthy {slot.spec.health.start_timeout_s:g}s after start"
                slot.busy = True
                self._spawn(self._restart(slot, "start timeout"), slot)
            else:
                self._probe(slot)

    async def _capture_exit(self, slot: Slot) -> None:
        lines = await self.driver.last_lines(slot.spec.instance_id, self.cfg.log_lines)
        if lines:  # a run that printed nothing keeps the previous run's lines visible
            slot.last_lines = lines
        level = logging.ERROR if slot.state is InstanceState.CRASHLOOP else logging.WARNING
        log.log(level, "instance exited", extra={
            "block": slot.spec.block_id, "instance": slot.spec.instance_id, "exit": slot.last_exit,
            "failures": slot.failures, "restart_in_s": round(max(0.0, slot.next_start - time.monotonic()), 3),
            "state": slot.state.value})

    async def _start(self, slot: Slot) -> None:
        iid = slot.spec.instance_id
        await asyncio.to_thread(fresh_socket_dir, slot.socket_dir)
        self._client.forget(slot.endpoint)
        try:
            obs = await self.driver.start(slot.spec, str(slot.socket_dir), slot.gpus)
        except AiosdRuntimeError as e:
            slot.failures += 1
            slot.error = str(e)
            slot.next_start = time.monotonic() + (self.cfg.backoff_max_s if isinstance(e, ImageNotFound)
                                                  else backoff(self.cfg, slot.failures))
            slot.state = InstanceState.FAILED if isinstance(e, ImageNotFound) or slot.failures >= \
                self.cfg.crashloop_after else InstanceState.STARTING
            log.error("instance start failed", extra={"instance": iid, "error": str(e)})
            return
        if self._slots.get(iid) is not slot:  # removed or replaced while starting
            return
        if slot.ever_started:
            slot.restarts += 1
        slot.ever_started = True
        slot.obs, slot.running = obs, True
        slot.started_mono = time.monotonic()
        slot.state = InstanceState.CRASHLOOP if slot.failures >= self.cfg.crashloop_after else InstanceState.RUNNING
        slot.error = ""
        slot.generation += 1
        self._probe(slot)

    def _probe(self, slot: Slot) -> None:
        slot.probing = True
        self._spawn(self._wait_healthy(slot, slot.generation))

    async def _wait_healthy(self, slot: Slot, gen: int) -> None:
        """Poll /health quickly from start until the first 200 (or the run ends)."""
        try:
            deadline = slot.started_mono + slot.spec.health.start_timeout_s
            while slot.generation == gen and time.monotonic() < deadline:
                if await self._client.health(slot.endpoint, slot.spec.health.timeout_s):
                    if slot.generation == gen:
                        mark_healthy(slot, time.monotonic())
                    return
                await asyncio.sleep(_PROBE_INTERVAL_S)
        finally:
            slot.probing = False

    async def _health(self, slot: Slot) -> None:
        gen = slot.generation
        ok = await self._client.health(slot.endpoint, slot.spec.health.timeout_s)
        if slot.generation != gen:
            return
        if ok:
            mark_healthy(slot, time.monotonic())
            return
        slot.health_fails += 1
        slot.state = InstanceState.UNHEALTHY
        slot.healthy_since = None
        slot.next_health = time.monotonic() + slot.spec.health.interval_s
        log.warning("instance unhealthy", extra={"instance": slot.spec.instance_id, "fails": slot.health_fails})
        if slot.health_fails >= slot.spec.health.unhealthy_threshold:
            slot.error = f"{slot.health_fails} failed health checks"
            await self._restart(slot, "unhealthy")

    async def _restart(self, slot: Slot, reason: str) -> None:
        log.warning("restarting instance", extra={"instance": slot.spec.instance_id, "reason": reason})
        await self.driver.stop(slot.spec.instance_id, self.cfg.stop_timeout_s)
        obs = (await self.driver.list_owned()).get(slot.spec.instance_id)
        if slot.running:
            on_exit(self.cfg, slot, obs, time.monotonic())
            await self._capture_exit(slot)

    async def _replace(self, slot: Slot) -> None:
        await self.driver.remove(slot.spec.instance_id)
        slot.running, slot.obs = False, None
        slot.generation += 1
        slot.next_start = 0.0

    async def _remove(self, iid: str) -> None:
        try:
            try:
                await self.driver.stop(iid, self.cfg.stop_timeout_s)
            finally:
                await self.driver.remove(iid)
            short = hashlib.sha256(iid.encode()).hexdigest()[:12]
            await asyncio.to_thread(shutil.rmtree, self._sock_root / short, True)
            log.info("instance removed", extra={"instance": iid})
        except InstanceNotFound:
            pass
        finally:
            self._removing.discard(iid)
