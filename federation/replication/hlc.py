"""Hybrid logical clock (Kulkarni et al. 2014) as free functions over one int.

An HLC value is `wall_ms << 16 | logical`: ordered like the pair, compact on the wire. The
physical time is always passed in (the core never reads a clock). Remote values further ahead
than `max_drift_s` are refused, so one node with a runaway clock cannot drag every clock along.
"""

from __future__ import annotations

from federation.replication.errors import ClockDriftError

LOGICAL_BITS = 16
# 48 bits of milliseconds last until the year 10889; the whole value fits msgpack's uint64.
MAX_HLC = (1 << 64) - 1


def from_wall(wall_s: float) -> int:
    """The smallest HLC value at wall-clock time `wall_s` (logical part 0)."""
    if wall_s < 0:
        raise ValueError(f"wall_s: must be >= 0, got {wall_s}")
    return int(wall_s * 1000) << LOGICAL_BITS


def wall_s(hlc: int) -> float:
    """The physical part of an HLC value, in seconds."""
    return (hlc >> LOGICAL_BITS) / 1000.0


def logical(hlc: int) -> int:
    """The logical counter of an HLC value."""
    return hlc & ((1 << LOGICAL_BITS) - 1)


def tick(last: int, now_wall_s: float) -> int:
    """HLC for a local event: strictly greater than `last`, never behind the wall clock.

    A logical counter that overflows carries into the milliseconds: the clock runs at most
    1 ms ahead per 65,536 events in one millisecond, which the drift bound absorbs.
    """
    return max(last + 1, from_wall(now_wall_s))


def check_drift(remote: int, now_wall_s: float, max_drift_s: float) -> None:
    """Refuse a remote HLC whose physical part is more than `max_drift_s` ahead of ours.

    Raises:
        ClockDriftError: the remote value is too far in the future (or out of range).
    """
    if remote < 0 or remote > MAX_HLC:
        raise ClockDriftError(f"hlc: {remote} is out of range")
    ahead = wall_s(remote) - now_wall_s
    if ahead > max_drift_s:
        raise ClockDriftError(f"hlc: {ahead:.3f}s ahead of the local clock (limit {max_drift_s}s)")


def observe(last: int, remote: int, now_wall_s: float, max_drift_s: float) -> int:
    """Merge a remote HLC into ours (receive event): the result is >= both.

    Raises:
        ClockDriftError: see `check_drift`; `last` is then unchanged.
    """
    check_drift(remote, now_wall_s, max_drift_s)
    return max(last, remote)


__all__ = ["LOGICAL_BITS", "MAX_HLC", "check_drift", "from_wall", "logical", "observe", "tick", "wall_s"]
