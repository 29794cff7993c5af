"""The `aiosd` command line: parse, dispatch, turn every user error into one sentence.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 130 interrupted. The CLI talks to a
running daemon only through aiosd.client; `init` and `run` work on the data dir directly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiosd.cli import (
    asset_cmds,
    audit_cmds,
    cluster_cmds,
    image_cmds,
    net_cmds,
    node_cmds,
    policy_cmds,
    registry_cmds,
    runtime_cmds,
    spec_cmds,
    user_cmds,
)
from aiosd.cli.common import add_common
from aiosd.config import Settings, load_settings
from aiosd.errors import AiosdError, UsageError
from federation.errors import FederationError
from storage import StorageError

Command = Callable[[argparse.Namespace, Settings], int]

DESCRIPTION = """\
aiosd: a peer-to-peer AI operating system daemon.
Every machine runs `aiosd run`; nodes form a network that serves AI blocks with no central service.

Start here:
  aiosd run                 start a daemon (initialises a single-node network on first start)
  aiosd status              what the local daemon is (node id, network, cluster, peers)
  aiosd <command> --help    details and examples for one command
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's signature is NoReturn
        self.print_usage(sys.stderr)
        self.exit(2, f"aiosd: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aiosd", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # `aiosd get` is registry_cmds' (tables and, through spec_cmds.cmd_get, the catalog).
    specs = [r for r in spec_cmds.REGISTER if r is not spec_cmds.register_get]
    for register in [*node_cmds.REGISTER, *image_cmds.REGISTER, *net_cmds.REGISTER, *cluster_cmds.REGISTER,
                     *specs, *runtime_cmds.REGISTER,
                     *policy_cmds.REGISTER, *registry_cmds.REGISTER, *asset_cmds.REGISTER, *user_cmds.REGISTER,
                     *audit_cmds.REGISTER]:
        p = register(sub)
        if p.get_default("handler") is not None:
            add_common(p)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags: dict[str, dict[str, Any]] = {
        "node": {"data_dir": args.data_dir, "cluster": getattr(args, "cluster", None)},
        "api": {"socket": args.socket, "tcp_port": getattr(args, "api_port", None)},
        "log": {"level": args.log_level, "format": args.log_format},
        "p2p": {"host": getattr(args, "p2p_host", None), "port": getattr(args, "p2p_port", None)},
        "discovery": {"mdns": getattr(args, "mdns", None), "seeds": getattr(args, "seed", None) or None},
        "runtime": {"driver": getattr(args, "driver", None)},
    }
    from pathlib import Path

    return load_settings(Path(args.config) if args.config else None, flags=flags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = settings_from_args(args)
        handler: Command = args.handler
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `aiosd ... | head`: the reader left; say nothing more (and not on the closed pipe).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as e:
        print(f"aiosd: error: {e}", file=sys.stderr)
        return 2
    except (AiosdError, StorageError, FederationError) as e:
        print(f"aiosd: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except Exception:
        logging.getLogger("aiosd.cli").exception("unexpected failure")
        print("aiosd: internal error (a bug): the traceback is above; please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
