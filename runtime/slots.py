"""What the supervisor keeps per desired instance (a Slot), its configuration, and the slot's pure
state transitions (exit → back-off / crashloop, healthy) and the checks of a new desired set (specs,
GPUs). No asyncio and no clock here (`now` is passed in); check_specs stats paths.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.drivers.base import SOCKET_NAME, Observed
from runtime.errors import SpecError
from runtime.gpus import GpuBook
from runtime.spec import Endpoint, GpuDevice, GpuRequest, InstanceSpec, InstanceState

log = logging.getLogger("runtime.supervisor")  # transitions log as the supervisor's


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    node_id: str
    data_dir: Path
    socket_dir: Path | None = None  # short directory for instance sockets; default data_dir/"sock"
    cluster_id: str = "default"
    tick_s: float = 1.0  # how often the driver is asked what runs (one REST call for podman)
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_reset_s: float = 60.0  # healthy this long → the failure count starts over
    crashloop_after: int = 3  # consecutive failures before the state reads `crashloop`
    stop_timeout_s: float = 10.0
    log_lines: int = 20  # last output lines kept in the status of a dead instance
    max_instances: int = 1024

    @classmethod
    def test(cls, node_id: str, data_dir: Path, socket_dir: Path | None = None) -> SupervisorConfig:
        return cls(node_id=node_id, data_dir=data_dir, socket_dir=socket_dir, tick_s=0.1, backoff_initial_s=0.2,
                   backoff_max_s=2.0, backoff_reset_s=5.0, stop_timeout_s=5.0)


@dataclass(slots=True, eq=False)
class Slot:
    spec: InstanceSpec
    digest: str
    socket_dir: Path
    gpus: tuple[GpuDevice, ...]
    obs: Observed | None = None
    running: bool = False  # we expect it alive (started or adopted)
    state: InstanceState = InstanceState.STARTING
    restarts: int = 0
    ever_started: bool = False
    failures: int = 0
    next_start: float = 0.0
    started_mono: float = 0.0
    healthy_since: float | None = None
    health_fails: int = 0
    next_health: float = 0.0
    last_exit: int | None = None
    last_lines: tuple[str, ...] = ()
    error: str = ""
    busy: bool = False
    probing: bool = False
    generation: int = 0

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(socket=self.socket_dir / SOCKET_NAME)


def backoff(cfg: SupervisorConfig, failures: int) -> float:
    """The wait before the next start after `failures` consecutive failures (doubling up to the cap)."""
    return float(min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** max(0, failures - 1)))


def on_exit(cfg: SupervisorConfig, slot: Slot, obs: Observed | None, now: float) -> None:
    """The run ended: count the failure, schedule the restart, read `crashloop` past the threshold."""
    slot.running = False
    slot.generation += 1
    slot.failures += 1
    slot.healthy_since = None
    slot.last_exit = obs.exit_code if obs is not None else None
    slot.next_start = now + backoff(cfg, slot.failures)
    slot.state = InstanceState.CRASHLOOP if slot.failures >= cfg.crashloop_after else InstanceState.STARTING


def mark_healthy(slot: Slot, now: float) -> None:
    """A health check answered 200: healthy from now (logged on the change), next check scheduled."""
    if slot.state is not InstanceState.HEALTHY:
        log.info("instance healthy", extra={"block": slot.spec.block_id, "instance": slot.spec.instance_id,
                                            "after_s": round(now - slot.started_mono, 3)})
        slot.healthy_since = now
    slot.state = InstanceState.HEALTHY
    slot.health_fails = 0
    slot.next_health = now + slot.spec.health.interval_s


def check_specs(block_id: str, specs: Sequence[InstanceSpec], slots: Mapping[str, Slot]) -> set[str]:
    """Validate `specs` as the whole of `block_id`'s instances; their ids. Blocking (stats paths).

    Raises: SpecError naming `specs[i]` and its field.
    """
    ids: set[str] = set()
    for i, s in enumerate(specs):
        if not isinstance(s, InstanceSpec):
            raise SpecError(f"specs[{i}]", "must be an InstanceSpec")
        s.validate()
        if s.block_id != block_id:
            raise SpecError(f"specs[{i}].block_id", f"{s.block_id!r} is not {block_id!r}")
        if s.instance_id in ids:
            raise SpecError(f"specs[{i}].instance_id", f"{s.instance_id!r} appears twice")
        other = slots.get(s.instance_id)
        if other is not None and other.spec.block_id != block_id:
            raise SpecError(f"specs[{i}].instance_id",
                            f"{s.instance_id!r} already belongs to block {other.spec.block_id!r}")
        ids.add(s.instance_id)
    return ids


def check_gpus(book: GpuBook, slots: Mapping[str, Slot], specs: Sequence[InstanceSpec], leaving: set[str]) -> None:
    """Raise if the GPU requests of `specs` cannot all be met once `leaving` (and the old
    versions of changed specs) give theirs back; leaves the book as it was."""
    held = {iid: slots[iid] for iid in {s.instance_id for s in specs} | leaving
            if iid in slots and slots[iid].gpus}
    for iid in held:
        book.release(iid)
    pending: list[str] = []
    try:
        for s in specs:
            if s.gpus.wanted:
                book.allocate("pending:" + s.instance_id, s.gpus)
                pending.append("pending:" + s.instance_id)
    finally:
        for p in pending:
            book.release(p)
        for iid, slot in held.items():
            book.allocate(iid, GpuRequest(ids=tuple(g.uuid for g in slot.gpus), mode=slot.spec.gpus.mode))
