"""Errors of the daemon package. Exit codes: usage errors 2, runtime errors 1.

    AiosdError                      one clear sentence for the user; exit 1
    ├── UsageError                  the command line or a config value is wrong; exit 2
    │   └── ConfigError             a config file / env / flag value is wrong (names key and file)
    ├── NotInitialisedError         the data dir has no identity yet
    ├── AlreadyInitialisedError     `init` on an initialised dir without --force
    ├── PortInUseError              a listening address `aiosd run` needs is taken (names it and the flag)
    ├── DaemonNotRunning            the CLI found no daemon on the API socket (also ConnectionError)
    └── ApiError                    the daemon answered with an error body {code, message, field}
Storage, federation, runtime and spec errors keep their own trees; the CLI maps them to exit 1.
"""

from __future__ import annotations


class AiosdError(Exception):
    """A failure the user can act on; `str()` is one clear sentence."""

    exit_code = 1


class UsageError(AiosdError):
    exit_code = 2


class ConfigError(UsageError):
    """A configuration value is wrong; the message names the key and where it came from."""


class NotInitialisedError(AiosdError):
    pass


class AlreadyInitialisedError(AiosdError):
    pass


class PortInUseError(AiosdError):
    pass


class DaemonNotRunning(AiosdError, ConnectionError):
    pass


class ApiError(AiosdError):
    """An error answer from the daemon's API."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message if field is None or field in message else f"{field}: {message}")
        self.status = status
        self.code = code
        self.field = field
        if status in (400, 404, 409, 422):
            self.exit_code = 2 if status in (400, 422) else 1


__all__ = [
    "AiosdError",
    "AlreadyInitialisedError",
    "ApiError",
    "ConfigError",
    "DaemonNotRunning",
    "NotInitialisedError",
    "PortInUseError",
    "UsageError",
]
