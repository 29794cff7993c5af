"""The replicated controller state machine: placements, scale changes and task states per cluster.

Commands are msgpack wire models (kind + v + the proposer's `term`) applied in log order by
every replica (Raft's `StateMachine`); a command whose term is older than the newest term this
state has applied is refused (fencing, ARCHITECTURE §3) and counted. Snapshots are msgpack of
the whole state. No IO, no clock; readers take `view()` copies under a lock (the Raft core
applies from a worker thread).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from pydantic import Field, TypeAdapter, ValidationError

from federation.strict import Wire

# Why these caps: a LAN cluster holds at most a few thousand blocks; one block at most
# specs.block.MAX_INSTANCES (10,000) instances; tasks are a recent history, FIFO-evicted.
MAX_BLOCKS = 10_000
MAX_INSTANCES = 10_000
MAX_TASKS = 1_000
_Id = Annotated[str, Field(min_length=1, max_length=128)]



class InstanceSpec(Wire):
    instance_id: _Id
    node_id: _Id
    gpus: tuple[Annotated[int, Field(ge=0, le=1024)], ...] = Field(default=(), max_length=64)


class Allocator(Wire):
    """The block's resourceAllocator (kept so reassignment reuses the same allocator)."""

    uri: str = Field("policy.resourceAllocator.best-fit:v1", min_length=1, max_length=256)
    parameters: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class BlockSpec(Wire):
    """What a node needs to run a block's instances: the block and component catalog records the
    applying node stored (their AIOS documents, policy overrides, live parameters). It travels in
    the Raft log with the placement, so every node of the cluster resolves the same block."""

    block: dict[str, Any]
    component: dict[str, Any]


class PlaceBlock(Wire):
    """Set a block's whole placement (a new block, a scale change, or a re-placement).
    `spec` None keeps the block's committed spec (a scale); a placement with no spec at all is
    bookkeeping only (nothing runs it)."""

    kind: Literal["ctl.place"] = "ctl.place"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    block_id: _Id
    allocator: Allocator = Allocator()
    instances: tuple[InstanceSpec, ...] = Field(max_length=MAX_INSTANCES)
    spec: BlockSpec | None = None


class RemoveBlock(Wire):
    kind: Literal["ctl.remove"] = "ctl.remove"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    block_id: _Id


class MoveInstances(Wire):
    """Reassign instances (node death); `moves` maps instance id -> its new placement."""

    kind: Literal["ctl.move"] = "ctl.move"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    block_id: _Id
    moves: tuple[InstanceSpec, ...] = Field(max_length=MAX_INSTANCES)


class TaskState(Wire):
    kind: Literal["ctl.task"] = "ctl.task"
    v: Literal[1] = 1
    term: int = Field(ge=0)
    task_id: _Id
    task_kind: str = Field(min_length=1, max_length=64)
    state: Literal["running", "done", "failed"]
    detail: str = Field("", max_length=2000)


Command = Annotated[PlaceBlock | RemoveBlock | MoveInstances | TaskState, Field(discriminator="kind")]
AnyCommand = PlaceBlock | RemoveBlock | MoveInstances | TaskState
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Command)


class CommandError(ValueError):
    """Bytes in the log are not a controller command (names the field)."""


def json_form(value: Any) -> Any:
    """`value` with every tuple turned into a list: the log decodes msgpack arrays as tuples,
    JSON documents (and snapshots) hold lists."""
    if isinstance(value, dict):
        return {k: json_form(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_form(v) for v in value]
    return value


def encode_command(cmd: AnyCommand) -> bytes:
    packed: bytes = msgpack.packb(cmd.model_dump(mode="python"), use_bin_type=True)
    return packed


def decode_command(raw: bytes) -> AnyCommand:
    """Decode one command. Raises: CommandError naming the field."""
    try:
        obj = msgpack.unpackb(raw, raw=False, use_list=False)
        cmd: AnyCommand = _ADAPTER.validate_python(obj)
    except ValidationError as e:
        first = e.errors()[0]
        raise CommandError(".".join(str(p) for p in first["loc"]) + ": " + first["msg"]) from None
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise CommandError(f"not msgpack: {e}") from None
    return cmd


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    block_id: str
    node_id: str
    gpus: tuple[int, ...]
    term: int  # term of the command that put it here


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    kind: str
    state: str
    detail: str
    term: int
    index: int


@dataclass(slots=True)
class ClusterView:
    """A consistent copy of the state (what the API and the role supervisor read)."""

    applied_index: int = 0
    max_term: int = 0
    fenced: int = 0
    blocks: dict[str, dict[str, Instance]] = field(default_factory=dict)
    allocators: dict[str, Allocator] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    specs: dict[str, BlockSpec] = field(default_factory=dict)

    def instances_on(self, node_id: str) -> list[Instance]:
        return [i for insts in self.blocks.values() for i in insts.values() if i.node_id == node_id]


class ClusterState:
    """Raft `StateMachine` of the controller (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._applied = 0
        self._max_term = 0
        self.fenced = 0
        self.rejected = 0
        self._blocks: dict[str, dict[str, Instance]] = {}
        self._allocators: dict[str, Allocator] = {}
        self._specs: dict[str, BlockSpec] = {}
        self._tasks: OrderedDict[str, Task] = OrderedDict()

    # ----- StateMachine ------------------------------------------------------------------
    def apply(self, index: int, command: bytes) -> None:
        with self._lock:
            self._applied = index
            try:
                cmd = decode_command(command)
            except CommandError:
                self.rejected += 1  # the same bytes are refused on every replica: still deterministic
                return
            if cmd.term < self._max_term:
                self.fenced += 1
                return
            self._max_term = cmd.term
            self._apply(index, cmd)

    def _apply(self, index: int, cmd: AnyCommand) -> None:
        match cmd:
            case PlaceBlock():
                if cmd.block_id not in self._blocks and len(self._blocks) >= MAX_BLOCKS:
                    self.rejected += 1
                    return
                self._blocks[cmd.block_id] = {
                    s.instance_id: Instance(s.instance_id, cmd.block_id, s.node_id, s.gpus, cmd.term)
                    for s in cmd.instances
                }
                self._allocators[cmd.block_id] = cmd.allocator
                if cmd.spec is not None:  # arrays as lists, whether it came from the log or a snapshot
                    self._specs[cmd.block_id] = BlockSpec(block=json_form(cmd.spec.block),
                                                          component=json_form(cmd.spec.component))
            case RemoveBlock():
                self._blocks.pop(cmd.block_id, None)
                self._allocators.pop(cmd.block_id, None)
                self._specs.pop(cmd.block_id, None)
            case MoveInstances():
                insts = self._blocks.get(cmd.block_id)
                if insts is None:
                    self.rejected += 1
                    return
                for s in cmd.moves:
                    if s.instance_id in insts:
                        insts[s.instance_id] = Instance(s.instance_id, cmd.block_id, s.node_id, s.gpus, cmd.term)
            case TaskState():
                self._tasks[cmd.task_id] = Task(cmd.task_id, cmd.task_kind, cmd.state, cmd.detail, cmd.term, index)
                self._tasks.move_to_end(cmd.task_id)
                while len(self._tasks) > MAX_TASKS:
                    self._tasks.popitem(last=False)

    def snapshot(self) -> bytes:
        with self._lock:
            state = {
                "applied": self._applied,
                "max_term": self._max_term,
                "fenced": self.fenced,
                "blocks": {
                    b: [[i.instance_id, i.node_id, list(i.gpus), i.term] for i in insts.values()]
                    for b, insts in self._blocks.items()
                },
                "allocators": {b: a.model_dump(mode="python") for b, a in self._allocators.items()},
                "specs": {b: sp.model_dump(mode="python") for b, sp in self._specs.items()},
                "tasks": [[t.task_id, t.kind, t.state, t.detail, t.term, t.index] for t in self._tasks.values()],
            }
        packed: bytes = msgpack.packb(state, use_bin_type=True)
        return packed

    def restore(self, index: int, data: bytes) -> None:
        state = msgpack.unpackb(data, raw=False)
        with self._lock:
            self._applied = index
            self._max_term = int(state["max_term"])
            self.fenced = int(state["fenced"])
            self._blocks = {
                b: {r[0]: Instance(r[0], b, r[1], tuple(r[2]), int(r[3])) for r in rows}
                for b, rows in state["blocks"].items()
            }
            self._allocators = {b: Allocator.model_validate(a) for b, a in state["allocators"].items()}
            # Snapshots taken before specs travelled in the log have none.
            self._specs = {b: BlockSpec.model_validate(sp) for b, sp in state.get("specs", {}).items()}
            self._tasks = OrderedDict(
                (r[0], Task(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]))) for r in state["tasks"]
            )

    # ----- readers -----------------------------------------------------------------------
    def view(self) -> ClusterView:
        """A copy that later applies do not change."""
        with self._lock:
            return ClusterView(
                applied_index=self._applied,
                max_term=self._max_term,
                fenced=self.fenced,
                blocks={b: dict(insts) for b, insts in self._blocks.items()},
                allocators=dict(self._allocators),
                tasks=list(self._tasks.values()),
                specs=dict(self._specs),
            )


__all__ = [
    "MAX_BLOCKS",
    "MAX_INSTANCES",
    "MAX_TASKS",
    "Allocator",
    "AnyCommand",
    "BlockSpec",
    "ClusterState",
    "ClusterView",
    "CommandError",
    "Instance",
    "InstanceSpec",
    "MoveInstances",
    "PlaceBlock",
    "RemoveBlock",
    "Task",
    "TaskState",
    "decode_command",
    "encode_command",
    "json_form",
]
