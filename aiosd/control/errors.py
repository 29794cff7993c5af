"""Errors of the control plane's pure cores.

AiosdError
└── PlacementError          the instances asked for do not fit; the message names the unmet conditions
"""

from __future__ import annotations

from aiosd.errors import AiosdError


class PlacementError(AiosdError):
    """Not all requested instances fit ("no node satisfies: 2 GPUs with >= 10000 MB free ...")."""


__all__ = ["PlacementError"]
