"""Effects shared by the sans-IO protocol cores (SWIM, Raft, replication).

A core never sleeps, reads the clock or rolls dice: it takes `now` and an RNG as inputs and
returns effects. Drivers (asyncio over aiohttp) and the simulator (tests/sim) carry them out.
This module holds only the effect types every driver understands; cores add their own
notification effects (e.g. `MemberChanged`) that drivers pass on to their observers.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, NewType, TypeVar

NodeId = NewType("NodeId", str)

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Send(Generic[M]):
    """Deliver `msg` to node `to` (best effort: the network may drop, delay or duplicate it)."""

    to: NodeId
    msg: M


@dataclass(frozen=True, slots=True)
class Wake:
    """Call the core's `on_timer(now, key)` at monotonic time `at`.

    A later `Wake` with the same key replaces the earlier one (one pending timer per key);
    `at = math.inf` cancels it.
    """

    at: float
    key: Hashable


__all__ = ["NodeId", "Send", "Wake"]
