"""Private links: per-connection sessions (handshake, AEAD frames, admission, counters). Sans-IO."""

from federation.sessions.frames import OVERHEAD, FrameLimits, Opener, Sealer
from federation.sessions.gate import GateLimits, HandshakeGate
from federation.sessions.handshake import CIPHER, ClientHandshake, Identity, ServerHandshake, Session
from federation.sessions.stats import PeerSessionInfo, SessionsReport, SessionStats

__all__ = [
    "CIPHER",
    "OVERHEAD",
    "ClientHandshake",
    "FrameLimits",
    "GateLimits",
    "HandshakeGate",
    "Identity",
    "Opener",
    "PeerSessionInfo",
    "Sealer",
    "ServerHandshake",
    "Session",
    "SessionStats",
    "SessionsReport",
]
