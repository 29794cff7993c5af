"""State of one probe in flight and of the pings we relay for others (SWIM §3.1 ping-req)."""

from __future__ import annotations

from dataclasses import dataclass

from federation.sansio import NodeId


@dataclass(slots=True)
class ProbeState:
    """Our current probe: acked directly or through a relay, and how many relays sent nacks."""

    seq: int
    target: NodeId
    inc: int  # the target's incarnation when the probe began (a failed probe suspects that one)
    acked: bool = False
    expected_nacks: int = 0
    nacks: int = 0

    def awareness_delta(self) -> int:
        """Lifeguard: success heals (-1); relays that did not even nack suggest *we* are the problem."""
        if self.acked:
            return -1
        if self.expected_nacks > 0:
            return max(0, self.expected_nacks - self.nacks)
        return 1


@dataclass(frozen=True, slots=True)
class Relay:
    """A ping we sent on behalf of `requester`, whose probe has sequence number `seq`."""

    requester: NodeId
    seq: int


__all__ = ["ProbeState", "Relay"]
