"""Is a listening address free? Checked before `aiosd run` creates anything in its data dir.

A taken port is a clear sentence (which address, which process holds it when psutil can tell,
which flag picks another), not a traceback after a half-created identity.
"""

from __future__ import annotations

import errno
import socket

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from aiosd.errors import PortInUseError


def holder_of(port: int) -> str:
    """'pid 123 (aiosd)' for the process listening on `port`, or '' when psutil cannot tell."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return ""
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                return f"pid {c.pid} ({psutil.Process(c.pid).name()})"
            except psutil.Error:
                return f"pid {c.pid}"
    return ""


def check_free(host: str, port: int, what: str, flag: str) -> None:
    """Raises PortInUseError when `host:port` (TCP) cannot be bound; port 0 is always free.

    The probe binds the way aiohttp does (SO_REUSEADDR), so a port in TIME_WAIT is not "taken".
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise PortInUseError(f"cannot listen for {what} on {host}:{port}: {e.strerror}; "
                                     f"pick another address or port with {flag}") from None
            by = holder_of(port)
            raise PortInUseError(f"{host}:{port} ({what}) is already in use" + (f" by {by}" if by else "")
                                 + f"; another aiosd may be running there: stop it, or pick a free port with "
                                 f"{flag} PORT (0 = any free port)") from None


__all__ = ["check_free", "holder_of"]
