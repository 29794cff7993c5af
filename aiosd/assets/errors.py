"""Errors of the assets role.

    AiosdError
    └── AssetError   an asset operation failed; carries the HTTP status and code the API answers with
"""

from __future__ import annotations

from aiosd.errors import AiosdError


class AssetError(AiosdError):
    """An asset operation failed; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400, code: str = "asset_error") -> None:
        super().__init__(message)
        self.status, self.code = status, code


__all__ = ["AssetError"]
