"""Errors of the vdag role. Each `str()` is one sentence naming the vDAG, stage, block or field.

    AiosdError
    └── VdagError(status, code, field)   the API answers `status` with `code` (and the field)
"""

from __future__ import annotations

from aiosd.errors import AiosdError


class VdagError(AiosdError):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


__all__ = ["VdagError"]
