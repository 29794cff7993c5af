"""Errors of the policy system.

AiosdError
└── PolicyError                     a policy could not be found, configured or run
    ├── PolicyNotFound (LookupError)    no policy under that URI; the message lists what exists
    ├── PolicyConfigError (ValueError)  parameters/settings the policy rejects (paths named)
    ├── PolicyInputError (ValueError)   input_data the policy cannot work with (paths named)
    ├── PolicyFailed                    the policy's own code raised
    │   ├── PolicyTimeout (TimeoutError)    no answer within the call timeout (worker killed, replaced)
    │   ├── PolicyCrashed                   the sandbox worker died during a call (exit code/signal)
    │   └── PolicyLoadError                 the code failed to import/instantiate, or its venv failed
    ├── PolicyOutputError               the policy returned something outside its contract
    ├── PolicyArchiveError (ValueError) a policy archive is malformed, too big, or fails verification
    └── PolicyVetoed                    a governance pre-check refused an action (names the policy)
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
    def __init__(self, uri: str, cause: BaseException | None = None, *, detail: str = "") -> None:
        self.uri = uri
        what = detail or (f"{type(cause).__name__}: {str(cause)[:300]}" if cause is not None else "unknown")
        super().__init__(f"policy {uri} failed: {what}")


class PolicyTimeout(PolicyFailed, TimeoutError):
    def __init__(self, uri: str, timeout_s: float) -> None:
        super().__init__(uri, detail=f"no answer within {timeout_s:g} s; its worker was killed and "
                         "will be replaced (state is lost)")
        self.timeout_s = timeout_s


class PolicyCrashed(PolicyFailed):
    def __init__(self, uri: str, how: str) -> None:
        super().__init__(uri, detail=f"its sandbox worker died during the call ({how}); "
                         "it will be replaced on the next call")


class PolicyLoadError(PolicyFailed):
    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(uri, detail=f"could not be loaded: {detail[:600]}")


class PolicyOutputError(PolicyError):
    def __init__(self, uri: str, message: str) -> None:
        self.uri = uri
        super().__init__(f"policy {uri} returned a bad result: {message}")


class PolicyArchiveError(PolicyError, ValueError):
    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class PolicyVetoed(PolicyError):
    def __init__(self, action: str, uri: str, reason: str) -> None:
        self.action = action
        self.uri = uri
        self.reason = reason
        super().__init__(f"action {action} was refused by the pre-check policy {uri}: {reason[:300]}")


__all__ = [
    "PolicyArchiveError",
    "PolicyConfigError",
    "PolicyCrashed",
    "PolicyError",
    "PolicyFailed",
    "PolicyInputError",
    "PolicyLoadError",
    "PolicyNotFound",
    "PolicyOutputError",
    "PolicyTimeout",
    "PolicyVetoed",
]
