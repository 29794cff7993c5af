"""Session counters and per-peer state, as plain data a daemon can show (`aiosd doctor`, /metrics).

The transport owns one SessionStats; `Transport.sessions_report(now)` returns a SessionsReport
(totals + one PeerSessionInfo per live session). Names of the flat metrics are stable.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from federation.sessions.handshake import CIPHER


@dataclass(slots=True)
class SessionStats:
    """Counters of one transport (mutable; reasons are SessionReason / AuthReason values)."""

    handshakes_ok: int = 0
    handshake_failures: Counter[str] = field(default_factory=Counter)
    frames_dropped: Counter[str] = field(default_factory=Counter)
    sessions_opened: int = 0
    sessions_closed: int = 0
    rekeys: int = 0
    frames_in: int = 0
    frames_out: int = 0

    def metrics(self) -> dict[str, int]:
        out = {
            "sessions_handshakes_ok": self.handshakes_ok,
            "sessions_opened": self.sessions_opened,
            "sessions_closed": self.sessions_closed,
            "sessions_rekeys": self.rekeys,
            "sessions_frames_in": self.frames_in,
            "sessions_frames_out": self.frames_out,
        }
        out.update({f"sessions_handshake_failed_{k}": v for k, v in self.handshake_failures.items()})
        out.update({f"sessions_frames_dropped_{k}": v for k, v in self.frames_dropped.items()})
        return out


@dataclass(frozen=True, slots=True)
class PeerSessionInfo:
    """One live session as `aiosd doctor` shows it."""

    peer: str  # node id ("" for an anonymous join session)
    addr: str
    initiator: bool  # we opened the connection
    cipher: str
    session_id: str  # hex of 8 bytes of the transcript hash
    age_s: float
    last_rekey_age_s: float  # since the newer of the two directions' current epochs began
    epoch_out: int
    epoch_in: int
    frames_out: int  # in the current epoch
    cert_expires: int


@dataclass(frozen=True, slots=True)
class SessionsReport:
    """Totals and live sessions (what the daemon's doctor and metrics read)."""

    cipher: str
    handshakes_ok: int
    handshake_failures: dict[str, int]
    frames_dropped: dict[str, int]
    sessions_opened: int
    sessions_closed: int
    rekeys: int
    peers: tuple[PeerSessionInfo, ...]


__all__ = ["CIPHER", "PeerSessionInfo", "SessionStats", "SessionsReport"]
