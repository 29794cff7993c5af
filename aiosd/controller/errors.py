"""Errors of the control plane's pure cores.

AiosdError
├── PlacementError          the instances asked for do not fit; the message names the unmet conditions
└── ClusterRefused          the cluster's controller refused a request or none could be reached
"""

from __future__ import annotations

from aiosd.errors import AiosdError


class PlacementError(AiosdError):
    """Not all requested instances fit ("no node satisfies: 2 GPUs with >= 10000 MB free ...")."""


class ClusterRefused(AiosdError):
    """The controller's answer to a forwarded request was an error: `status` is HTTP-like (409 no
    fit, 503 no quorum, ...), `code` names it, the message says what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


__all__ = ["ClusterRefused", "PlacementError"]
