"""Errors of the block SDK.

    SdkError
    ├── ConfigError          bad AIOSD_INSTANCE_* environment or context JSON (the instance cannot start)
    ├── PacketError(ValueError)  a task body or packet field is malformed; `.field` names the path
    ├── CallbackFailed       a block callback raised or returned (False, err); `.stage`, `.type`, `.block_id`
    ├── Busy                 the bounded task queue is full (answer 503, never wait)
    └── MetricError(ValueError)  a user metric misused (unknown name, type clash, bad labels)

"The caller did wrong" (PacketError, Busy) and "the block's code failed" (CallbackFailed) are answered
per request; neither stops the instance.
"""

from __future__ import annotations


class SdkError(Exception):
    """Root of every error the SDK raises on purpose."""


class ConfigError(SdkError):
    """The instance environment (AIOSD_INSTANCE_*) is missing or malformed."""


class PacketError(SdkError, ValueError):
    """A task body or packet is malformed; `field` is the path of the first bad field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class CallbackFailed(SdkError):
    """A block callback failed.

    `type` is the exception class name when the callback raised, else a fixed word:
    `PreprocessFailed` / `OnDataFailed` / `UpdateFailed` when it returned (False, err), and
    `BadCallbackResult` when it returned something that is not the documented shape.
    """

    def __init__(self, stage: str, type_: str, message: str, block_id: str = "") -> None:
        super().__init__(f"{stage} failed in block {block_id or '?'}: {type_}: {message}")
        self.stage = stage
        self.type = type_
        self.message = message
        self.block_id = block_id

    def to_dict(self) -> dict[str, str]:
        """The `error` object of a 422 reply."""
        return {"type": self.type, "message": self.message, "block_id": self.block_id, "stage": self.stage}


class Busy(SdkError):
    """The worker pool and its bounded queue are full."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"instance busy: {capacity} tasks already admitted (workers + queue)")
        self.capacity = capacity


class MetricError(SdkError, ValueError):
    """A metric was used before registration, registered twice with another type, or given bad labels."""
