"""SWIM timing and capacity settings (one frozen dataclass, memberlist-derived profiles).

This module only holds numbers and checks them; the formulas that use them live in suspicion.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Self

# Wire-side limits (messages.py enforces them on decode; the config may not ask for more).
MAX_PIGGYBACK_WIRE = 64


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """SWIM + Lifeguard settings. Defaults are memberlist's `DefaultLANConfig`.

    Every field is validated in `__post_init__`; a bad value raises ValueError naming the field.
    """

    # How often we probe one member. Lower = faster failure detection, more traffic.
    probe_interval_s: float = 1.0
    # How long to wait for a direct ack before asking k others (should be ~99th pct RTT).
    probe_timeout_s: float = 0.5
    # Members asked to probe on our behalf when a direct ping goes unanswered (SWIM paper §3.1 "k").
    indirect_checks: int = 3
    # Gossip round period and fan-out (memberlist GossipInterval / GossipNodes).
    gossip_interval_s: float = 0.2
    gossip_nodes: int = 3
    # Dead members still get gossip for this long, so they learn they were declared dead and refute.
    gossip_to_dead_s: float = 30.0
    # Suspicion timeout = mult * max(1, log10 N) * probe interval (memberlist SuspicionMult).
    suspicion_mult: int = 4
    # Lifeguard: the timeout starts at max_mult * min and decays with independent confirmations.
    suspicion_max_timeout_mult: int = 6
    # Added to every suspicion timeout: the time a refutation needs to travel back (>> a LAN round
    # trip). Without it, a node stalled for exactly probe_interval + min timeout (5 s at N <= 10) loses
    # the race against the prober whose ping was in flight when the stall began.
    suspicion_grace_s: float = 0.1
    # A refutation is sent straight to this many random members (all of them in clusters this
    # small) instead of waiting for gossip: it is the most urgent news there is, and it is rare.
    refute_fanout: int = 32
    # Each broadcast is sent retransmit_mult * ceil(log10(N+1)) times (memberlist RetransmitMult).
    retransmit_mult: int = 4
    # Full state exchange with one random member; heals what gossip missed (memberlist: 30 s).
    push_pull_interval_s: float = 30.0
    # Lifeguard local health: probe interval scales by (score+1), score in [0, max-1].
    awareness_max_multiplier: int = 8
    # Dead/left members are forgotten after this long (bounded memory; memberlist GossipToTheDeadTime).
    dead_reap_s: float = 30.0
    # Failed (dead, not left) members are retried with a push-pull every interval for this long, so a
    # healed partition merges even after the other side was reaped (Serf reconnect_interval/timeout).
    reconnect_interval_s: float = 30.0
    reconnect_timeout_s: float = 24 * 3600.0
    # First retry of the seeds while we know nobody; doubles up to push_pull_interval_s.
    join_retry_s: float = 1.0
    # Caps on everything peers can grow. 10,000 members is 100x our largest cluster size.
    max_members: int = 10_000
    max_broadcasts: int = 10_000
    # Updates piggybacked per message (memberlist fits ~20 in a 1400-byte UDP packet).
    max_piggyback: int = 16
    # Ping-reqs we relay at once; each lives one probe timeout (3 per prober per second is normal).
    max_relays: int = 256
    # Failed members remembered for reconnect attempts.
    max_failed: int = 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{f.name}: must be a number, got {type(value).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}: must be finite, got {value}")
            if f.name.endswith("_s"):
                if value <= 0:
                    raise ValueError(f"{f.name}: must be > 0 seconds, got {value}")
            elif value < 0:
                raise ValueError(f"{f.name}: must be >= 0, got {value}")
        if self.probe_timeout_s > self.probe_interval_s:
            raise ValueError(
                f"probe_timeout_s: must be <= probe_interval_s ({self.probe_interval_s}), "
                f"got {self.probe_timeout_s}"
            )
        for name in ("gossip_nodes", "suspicion_mult", "retransmit_mult", "max_members"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.suspicion_max_timeout_mult < 1:
            raise ValueError(
                f"suspicion_max_timeout_mult: must be >= 1, got {self.suspicion_max_timeout_mult}"
            )
        if self.awareness_max_multiplier < 1:
            raise ValueError(f"awareness_max_multiplier: must be >= 1, got {self.awareness_max_multiplier}")
        if not 1 <= self.max_piggyback <= MAX_PIGGYBACK_WIRE:
            raise ValueError(f"max_piggyback: must be in 1..{MAX_PIGGYBACK_WIRE}, got {self.max_piggyback}")

    @classmethod
    def lan(cls) -> Self:
        """memberlist DefaultLANConfig: a LAN of up to a few hundred nodes."""
        return cls()

    @classmethod
    def wan(cls) -> Self:
        """memberlist DefaultWANConfig: higher latency and loss tolerated, slower detection."""
        return cls(
            probe_interval_s=5.0,
            probe_timeout_s=3.0,
            gossip_interval_s=0.5,
            gossip_nodes=4,
            gossip_to_dead_s=60.0,
            suspicion_mult=6,
            suspicion_grace_s=1.0,
            push_pull_interval_s=60.0,
            dead_reap_s=60.0,
        )

    @classmethod
    def test(cls) -> Self:
        """memberlist DefaultLocalConfig-like timers, 5x faster than LAN, for real-daemon tests."""
        return cls(
            probe_interval_s=0.2,
            probe_timeout_s=0.1,
            gossip_interval_s=0.05,
            gossip_to_dead_s=6.0,
            suspicion_grace_s=0.05,
            push_pull_interval_s=2.0,
            dead_reap_s=6.0,
            reconnect_interval_s=2.0,
            join_retry_s=0.2,
        )


__all__ = ["MAX_PIGGYBACK_WIRE", "SwimConfig"]
