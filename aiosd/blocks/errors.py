"""Errors of the blocks role (apply, scale, run). Each `str()` is one sentence naming the block.

    AiosdError
    └── BlockError              a block could not be brought to the state asked for
        ├── ImageUnavailable    its image is not on this node and cannot be fetched or built
        ├── RuntimeRefused      the node's runtime refused its instances (GPUs, limits, driver)
        └── InstanceFailed      an instance crash-looped or failed while the block was starting
"""

from __future__ import annotations

from aiosd.errors import AiosdError


class BlockError(AiosdError):
    """A block could not be brought to the state asked for."""


class ImageUnavailable(BlockError):
    pass


class RuntimeRefused(BlockError):
    pass


class InstanceFailed(BlockError):
    pass


__all__ = ["BlockError", "ImageUnavailable", "InstanceFailed", "RuntimeRefused"]
