"""p2p kinds of the controller (besides `raft.*`): gateway forwarding, node inventories, status.

`ctl.forward` carries a management request from any node to its cluster's leader; the leader
answers `ctl.forward_answer` with an HTTP-like status so the gateway can relay errors verbatim.
Pure models; no IO. Kinds are append-only (docs/wire catalogue).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from aiosd.controller.state import Allocator, BlockSpec
from federation.strict import Wire

_Id = Annotated[str, Field(min_length=1, max_length=128)]
# A LAN cluster is 1-100 nodes; a node has at most a few dozen GPUs.
MAX_GPUS = 64
MAX_REPORTED_INSTANCES = 10_000
# Instance ids are `<block_id>-<n>` with n < 10,000 and at most 128 characters: 128 - len("-9999").
MAX_PLACED_BLOCK_ID = 123



class PlaceRequest(Wire):
    """Place (or scale) a block to `count` instances with `allocator` (the apply path's seam)."""

    block_id: _Id
    count: int = Field(ge=0, le=10_000)
    allocator: Allocator = Allocator()
    spec: BlockSpec | None = None  # what nodes run (from `aiosd apply --cluster`); None keeps the committed one

    @field_validator("block_id")
    @classmethod
    def _fits_instance_ids(cls, v: str) -> str:
        if len(v) > MAX_PLACED_BLOCK_ID:
            raise ValueError(f"at most {MAX_PLACED_BLOCK_ID} characters (its instance ids <block_id>-<n> "
                             f"must fit 128), got {len(v)}")
        return v


class DryRunRequest(Wire):
    block_id: _Id = "dry-run"
    count: int = Field(1, ge=1, le=10_000)
    allocator: Allocator = Allocator()


class ForwardRequest(Wire):
    kind: Literal["ctl.forward"] = "ctl.forward"
    v: Literal[1] = 1
    op: Literal["place", "remove", "dry_run", "leave"]
    place: PlaceRequest | None = None
    dry_run: DryRunRequest | None = None
    block_id: str = Field("", max_length=128)
    cluster: str = Field("", max_length=64)  # the target cluster; "" = the sender's own
    node: str = Field("", max_length=128)  # op "leave": the node leaving the voters (the sender itself)


class ForwardAnswer(Wire):
    kind: Literal["ctl.forward_answer"] = "ctl.forward_answer"
    v: Literal[1] = 1
    status: int = Field(ge=100, le=599)
    code: str = Field("", max_length=64)
    message: str = Field("", max_length=4000)
    result: dict[str, Any] = Field(default_factory=dict)


class GpuReport(Wire):
    index: int = Field(ge=0, le=1024)
    uuid: str = Field("", max_length=128)
    name: str = Field("", max_length=128)
    memory_total_mb: float = Field(ge=0)
    memory_free_mb: float = Field(ge=0)
    util_pct: float = Field(0.0, ge=0, le=100)


class GpuHold(Wire):
    """GPUs held by an instance the cluster's state does not place (a block applied on the node)."""

    instance_id: _Id
    gpus: tuple[Annotated[int, Field(ge=0, le=1024)], ...] = Field(max_length=MAX_GPUS)
    exclusive: bool


class InventoryRequest(Wire):
    kind: Literal["ctl.inventory"] = "ctl.inventory"
    v: Literal[1] = 1


class Inventory(Wire):
    """What a node has and runs: the leader's input for placement and reconciliation."""

    kind: Literal["ctl.inventory_answer"] = "ctl.inventory_answer"
    v: Literal[1] = 1
    node_id: _Id
    cluster: _Id
    vcpus: float = Field(ge=0)
    memory_mb: float = Field(ge=0)
    gpus: tuple[GpuReport, ...] = Field(default=(), max_length=MAX_GPUS)
    applied_index: int = Field(0, ge=0)
    instances: tuple[_Id, ...] = Field(default=(), max_length=MAX_REPORTED_INSTANCES)
    held: tuple[GpuHold, ...] = Field(default=(), max_length=MAX_REPORTED_INSTANCES)


class StatusRequest(Wire):
    kind: Literal["ctl.status"] = "ctl.status"
    v: Literal[1] = 1


class StatusAnswer(Wire):
    kind: Literal["ctl.status_answer"] = "ctl.status_answer"
    v: Literal[1] = 1
    cluster: _Id
    node_id: _Id
    role: str = Field(max_length=32)
    leader: str | None = Field(None, max_length=128)
    term: int = Field(ge=0)
    commit_index: int = Field(ge=0)
    voters: tuple[str, ...] = Field(default=(), max_length=1024)
    learners: tuple[str, ...] = Field(default=(), max_length=1024)
    blocks: int = Field(0, ge=0)
    instances: int = Field(0, ge=0)


class SeedRequest(Wire):
    """To a CA holder: may I seed my (new) cluster's Raft group as its first voter?"""

    kind: Literal["ctl.seed"] = "ctl.seed"
    v: Literal[1] = 1


class SeedAnswer(Wire):
    kind: Literal["ctl.seed_answer"] = "ctl.seed_answer"
    v: Literal[1] = 1
    granted: bool
    seed: str = Field("", max_length=128)  # the node that seeds (or seeded) the cluster


CONTROLLER_MODELS: tuple[type[BaseModel], ...] = (
    ForwardRequest, ForwardAnswer, InventoryRequest, Inventory, StatusRequest, StatusAnswer, SeedRequest, SeedAnswer,
)

__all__ = [
    "CONTROLLER_MODELS",
    "MAX_PLACED_BLOCK_ID",
    "DryRunRequest",
    "ForwardAnswer",
    "ForwardRequest",
    "GpuHold",
    "GpuReport",
    "Inventory",
    "InventoryRequest",
    "PlaceRequest",
    "SeedAnswer",
    "SeedRequest",
    "StatusAnswer",
    "StatusRequest",
]
