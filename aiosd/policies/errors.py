"""Errors of the policy system.

AiosdError
└── PolicyError                     a policy could not be found, configured or run
    ├── PolicyNotFound (LookupError)    no policy under that URI; the message lists what exists
    ├── PolicyConfigError (ValueError)  parameters/settings the policy rejects (paths named)
    ├── PolicyInputError (ValueError)   input_data the policy cannot work with (paths named)
    ├── PolicyFailed                    the policy's own code raised
    └── PolicyOutputError               the policy returned something outside its contract
"""

from __future__ import annotations

from collections.abc import Sequence

from aiosd.errors import AiosdError
from aiosd.specs.errors import Problem


class PolicyError(AiosdError):
    """A policy could not be found, configured or run; `str()` is one clear sentence."""


class PolicyNotFound(PolicyError, LookupError):
    def __init__(self, uri: str, known: Sequence[str]) -> None:
        listed = ", ".join(known) or "none"
        super().__init__(f"policy {uri[:120]!r} is not registered; registered: {listed}")
        self.uri = uri
        self.known = tuple(known)


class PolicyConfigError(PolicyError, ValueError):
    def __init__(self, uri: str, problems: Sequence[Problem]) -> None:
        self.uri = uri
        self.problems = tuple(problems)
        super().__init__(f"policy {uri}: " + "; ".join(str(p) for p in problems[:10]))


class PolicyInputError(PolicyError, ValueError):
    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class PolicyFailed(PolicyError):
    def __init__(self, uri: str, cause: BaseException) -> None:
        self.uri = uri
        super().__init__(f"policy {uri} failed: {type(cause).__name__}: {str(cause)[:300]}")


class PolicyOutputError(PolicyError):
    def __init__(self, uri: str, message: str) -> None:
        self.uri = uri
        super().__init__(f"policy {uri} returned a bad result: {message}")


__all__ = [
    "PolicyConfigError",
    "PolicyError",
    "PolicyFailed",
    "PolicyInputError",
    "PolicyNotFound",
    "PolicyOutputError",
]
