"""Control plane cores: placement (the scheduler seam the elected controller calls)."""

from aiosd.controller.errors import PlacementError
from aiosd.controller.placement import (
    Assignment,
    Candidate,
    GpuView,
    NodeView,
    Placement,
    PlacementResult,
    capacity,
    node_state,
    place,
)

__all__ = [
    "Assignment",
    "Candidate",
    "GpuView",
    "NodeView",
    "Placement",
    "PlacementError",
    "PlacementResult",
    "capacity",
    "node_state",
    "place",
]
