"""Errors of the daemon package. Exit codes: usage errors 2, runtime errors 1.

    AiosdError                      one clear sentence for the user; exit 1
    ├── UsageError                  the command line or a config value is wrong; exit 2
    │   └── ConfigError             a config file / env / flag value is wrong (names key and file)
    ├── NotInitialisedError         the data dir has no identity yet
    ├── AlreadyInitialisedError     `init` on an initialised dir without --force
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


# Where a systemd unit for aiosd would be installed (`aiosd stop`/not-running hints name systemctl only then).
SYSTEMD_UNITS = ("/etc/systemd/system/aiosd.service", "/lib/systemd/system/aiosd.service",
                 "/usr/lib/systemd/system/aiosd.service")


class DaemonNotRunning(AiosdError, ConnectionError):
    @classmethod
    def at(cls, where: str) -> DaemonNotRunning:
        """The not-running sentence: suggests `systemctl start aiosd` only where the unit is installed."""
        return cls(f"aiosd is not running (nothing answers on {where}); start it with {start_hint()}")


def start_hint() -> str:
    import os

    if any(os.path.exists(p) for p in SYSTEMD_UNITS):
        return "`systemctl start aiosd` (or `aiosd run` in the foreground)"
    return "`aiosd run`"


class ApiError(AiosdError):
    """An error answer from the daemon's API."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message if field is None or field in message else f"{field}: {message}")
        self.status = status
        self.code = code
        self.field = field
        if status in (400, 404, 409, 422):
            self.exit_code = 2 if status in (400, 422) else 1


def describe_type(v: object) -> str:
    """A JSON value's type as users read it: null, a boolean, a number, a string, an array, an object."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


__all__ = [
    "AiosdError",
    "AlreadyInitialisedError",
    "ApiError",
    "ConfigError",
    "DaemonNotRunning",
    "NotInitialisedError",
    "UsageError",
    "describe_type",
    "start_hint",
]
