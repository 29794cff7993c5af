"""The console's typed errors."""

from __future__ import annotations

from aiosd.errors import AiosdError


class ConsoleError(AiosdError):
    """A console request that cannot be done; `field` names the input at fault, `status` the HTTP one."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


__all__ = ["ConsoleError"]
