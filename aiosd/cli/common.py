"""What every CLI command shares: the global options, the call to the local API, --json output,
JSON arguments. Stdlib only at import time: `aiosd status --json` never loads pydantic or aiohttp.

A command handler is `handler(args, env) -> exit code`; `env` (an `Env`) knows the global options,
the socket and data dir (resolved without loading the settings models) and calls the API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosd.cli.output import print_json
from aiosd.errors import UsageError, describe_type

if TYPE_CHECKING:
    from aiosd.cli.http import LocalApi
    from aiosd.config import Settings

DEFAULT_TIMEOUT_S = 30.0  # seconds an API call may take unless the command says otherwise
# The same default as aiosd.config.DEFAULT_CONFIG (a unit test keeps them equal).
DEFAULT_CONFIG = Path("/etc/aiosd/aiosd.toml")
# Global options: accepted before or after the command, at any depth. Value-taking ones first.
GLOBAL_VALUES = {"--socket": "socket", "--config": "config", "--data-dir": "data_dir",
                 "--log-level": "log_level", "--log-format": "log_format"}
GLOBAL_SWITCHES = {"--json": "json"}
GLOBAL_CHOICES = {"log_level": ("debug", "info", "warning", "error"), "log_format": ("text", "json")}

Sub = Any  # argparse's _SubParsersAction is private
Handler = Callable[[argparse.Namespace, "Env"], int]


def split_globals(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Take the global options out of ARGV wherever they stand (up to `--`). Raises UsageError."""
    rest: list[str] = []
    found: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name, eq, value = arg.partition("=")
        if name in GLOBAL_VALUES:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{name} needs a value")
                i += 1
                value = argv[i]
            key = GLOBAL_VALUES[name]
            if key in GLOBAL_CHOICES and value not in GLOBAL_CHOICES[key]:
                raise UsageError(f"{name}: {value!r} is not one of {', '.join(GLOBAL_CHOICES[key])}")
            found[key] = value
        elif arg in GLOBAL_SWITCHES:
            found[GLOBAL_SWITCHES[arg]] = True
        else:
            rest.append(arg)
        i += 1
    return rest, found


def add_common(p: argparse.ArgumentParser) -> None:
    """The global options in a command's --help (parsing happens in split_globals)."""
    g = p.add_argument_group("global options (before or after the command)")
    g.add_argument("--config", metavar="FILE", help="TOML config file (default: /etc/aiosd/aiosd.toml if present)")
    g.add_argument("--data-dir", metavar="DIR", help="node data dir (default: /var/lib/aiosd as root, "
                   "else $XDG_DATA_HOME/aiosd)")
    g.add_argument("--socket", metavar="PATH", help="local API socket (default: /run/aiosd/aiosd.sock as root, "
                   "else $XDG_RUNTIME_DIR/aiosd.sock)")
    g.add_argument("--log-level", choices=GLOBAL_CHOICES["log_level"], help="daemon log level")
    g.add_argument("--log-format", choices=GLOBAL_CHOICES["log_format"], help="daemon log format")


def _toml_value(path: Path | None, section: str, key: str) -> str | None:
    if path is None or not path.is_file():
        return None
    import tomllib

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the full settings loader reports it, with the key and the file
    value = doc.get(section, {}).get(key) if isinstance(doc.get(section), dict) else None
    return value if isinstance(value, str) and value else None


class Env:
    """The global options and the local API for one command run."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self._environ = os.environ if environ is None else environ
        self._settings: Settings | None = None

    # ----- where the daemon is (no settings models loaded) ---------------------------------------
    def _config_path(self) -> Path | None:
        raw = getattr(self.args, "config", None) or self._environ.get("AIOSD_CONFIG")
        return Path(raw) if raw else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)

    def _pick(self, flag: str, env_names: tuple[str, ...], section: str, key: str) -> str | None:
        value = getattr(self.args, flag, None)
        if value:
            return str(value)
        for name in env_names:
            if self._environ.get(name):
                return self._environ[name]
        return _toml_value(self._config_path(), section, key)

    @property
    def data_dir(self) -> Path:
        raw = self._pick("data_dir", ("AIOSD_NODE_DATA_DIR", "AIOSD_DATA_DIR"), "node", "data_dir")
        if raw:
            return Path(raw)
        if os.geteuid() == 0:
            return Path("/var/lib/aiosd")
        xdg = self._environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(xdg) / "aiosd"

    @property
    def socket_path(self) -> Path:
        raw = self._pick("socket", ("AIOSD_API_SOCKET", "AIOSD_SOCKET"), "api", "socket")
        if raw:
            return Path(raw)
        if os.geteuid() == 0:
            return Path("/run/aiosd/aiosd.sock")
        runtime = self._environ.get("XDG_RUNTIME_DIR")
        return Path(runtime) / "aiosd.sock" if runtime else self.data_dir / "aiosd.sock"

    @property
    def settings(self) -> Settings:
        """The full, validated settings (file → environment → flags); loads the settings models."""
        if self._settings is None:
            self._settings = settings_from_args(self.args)
        return self._settings

    # ----- the API ------------------------------------------------------------------------------
    def api(self, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> LocalApi:
        from aiosd.cli.http import LocalApi  # http.client is imported by the commands that call the daemon

        return LocalApi(self.socket_path, timeout_s=timeout_s)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json", timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Any:
        return self.api(timeout_s).request(method, path, body, raw=raw, content_type=content_type)

    def get(self, path: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Any:
        return self.call("GET", path, timeout_s=timeout_s)

    def post(self, path: str, body: Any = None, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Any:
        return self.call("POST", path, body, timeout_s=timeout_s)

    # ----- output -------------------------------------------------------------------------------
    def show(self, value: Any, human: Callable[[Any], object] | None = None) -> int:
        """Print VALUE as JSON with --json (or when there is no human form), else `human(value)`."""
        if self.json or human is None:
            print_json(value)
        else:
            human(value)
        return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    from aiosd.config import load_settings

    flags: dict[str, dict[str, Any]] = {
        "node": {"data_dir": getattr(args, "data_dir", None), "cluster": getattr(args, "cluster", None)},
        "api": {"socket": getattr(args, "socket", None), "tcp_port": getattr(args, "api_port", None)},
        "log": {"level": getattr(args, "log_level", None), "format": getattr(args, "log_format", None)},
        "p2p": {"host": getattr(args, "p2p_host", None), "port": getattr(args, "p2p_port", None)},
        "discovery": {"mdns": getattr(args, "mdns", None), "seeds": getattr(args, "seed", None) or None},
        "runtime": {"driver": getattr(args, "driver", None)},
    }
    config = getattr(args, "config", None)
    return load_settings(Path(config) if config else None, flags=flags)


def command(sub: Sub, name: str, help_: str, description: str, epilog: str,
            handler: Handler | None = None, *, json_help: str | None = "print as JSON") -> argparse.ArgumentParser:
    """One (sub)command parser with its examples; with a handler it is a leaf (and gets --json)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description, epilog=epilog,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if handler is not None:
        p.set_defaults(handler=handler)
        if json_help is not None:
            p.add_argument("--json", action="store_true", help=json_help)
    return p


def q(text: str) -> str:
    """TEXT as one URL path segment."""
    return urllib.parse.quote(text, safe="")


def read_text_arg(text: str, flag: str) -> str:
    """`@FILE` → the file's text, `-` → stdin, anything else as given."""
    if text == "-":
        return sys.stdin.read()
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"{flag}: cannot read {text[1:]} ({e.strerror})") from None
        except UnicodeDecodeError:
            raise UsageError(f"{flag}: {text[1:]} is not UTF-8 text") from None
    return text


def json_arg(text: str | None, flag: str, *, want_object: bool = False) -> Any:
    """A JSON value given inline, as @FILE or as `-` (stdin); None when not given. Raises UsageError."""
    if text is None:
        return None
    try:
        value = json.loads(read_text_arg(text, flag))
    except ValueError as e:
        raise UsageError(f"{flag} is not valid JSON: {e}") from None
    if want_object and not isinstance(value, dict):
        raise UsageError(f"{flag}: must be a JSON object, not {describe_type(value)}")
    return value


__all__ = [
    "GLOBAL_SWITCHES",
    "GLOBAL_VALUES",
    "Env",
    "Handler",
    "Sub",
    "add_common",
    "command",
    "json_arg",
    "q",
    "read_text_arg",
    "settings_from_args",
    "split_globals",
]
