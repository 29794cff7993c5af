"""Errors of the runtime package (drivers, GPUs, supervisor, balancer, images).

    AiosdRuntimeError               anything the runtime could not do; `str()` is one clear sentence
    ├── SpecError (ValueError)      an InstanceSpec field is wrong; the message names the field
    ├── DriverError                 the container/process driver failed
    │   ├── DriverUnavailable       podman (or its service) is not usable on this node
    │   ├── ImageNotFound (LookupError)   the image named in a spec does not exist locally
    │   ├── InstanceStartError      an instance could not be started
    │   └── InstanceNotFound (LookupError) no instance with that id is owned here
    ├── ImageBuildError             building the base or a block image failed
    ├── GpuError
    │   ├── NoGpuError              GPUs were requested on a node that has none
    │   └── GpuUnavailable          the node has GPUs, but not enough free ones for the request
    └── TaskError                   a task could not be served by the local instances
        ├── NoHealthyInstance       the block has no healthy local instance
        ├── InstanceBusy            the instance's queue is full (HTTP 503); retry later
        └── TaskFailed              the block answered with an error (HTTP 422/400)
"""

from __future__ import annotations


class AiosdRuntimeError(Exception):
    """A runtime failure the caller can act on."""


class SpecError(AiosdRuntimeError, ValueError):
    """An instance spec is invalid; the message starts with the field path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DriverError(AiosdRuntimeError):
    pass


class DriverUnavailable(DriverError):
    pass


class ImageNotFound(DriverError, LookupError):
    def __init__(self, image: str) -> None:
        super().__init__(f"image {image!r} does not exist on this node (build it with `aiosd image build` or pull it)")
        self.image = image


class InstanceStartError(DriverError):
    pass


class InstanceNotFound(DriverError, LookupError):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no instance {instance_id!r} on this node")
        self.instance_id = instance_id


class ImageBuildError(AiosdRuntimeError):
    pass


class GpuError(AiosdRuntimeError):
    pass


class NoGpuError(GpuError):
    pass


class GpuUnavailable(GpuError):
    pass


class TaskError(AiosdRuntimeError):
    pass


class NoHealthyInstance(TaskError):
    def __init__(self, block_id: str) -> None:
        super().__init__(f"block {block_id!r} has no healthy instance on this node")
        self.block_id = block_id


class InstanceBusy(TaskError):
    def __init__(self, block_id: str, instance_id: str) -> None:
        super().__init__(f"instance {instance_id!r} of block {block_id!r} is busy (queue full); retry later")
        self.block_id = block_id
        self.instance_id = instance_id


class TaskFailed(TaskError):
    """The block answered with an error body `{type, message, block_id, stage}`."""

    def __init__(self, block_id: str, error_type: str, message: str, stage: str = "") -> None:
        super().__init__(f"block {block_id!r} failed the task ({error_type}): {message}")
        self.block_id = block_id
        self.error_type = error_type
        self.message = message
        self.stage = stage


__all__ = [
    "AiosdRuntimeError",
    "DriverError",
    "DriverUnavailable",
    "GpuError",
    "GpuUnavailable",
    "ImageBuildError",
    "ImageNotFound",
    "InstanceBusy",
    "InstanceNotFound",
    "InstanceStartError",
    "NoGpuError",
    "NoHealthyInstance",
    "SpecError",
    "TaskError",
    "TaskFailed",
]
