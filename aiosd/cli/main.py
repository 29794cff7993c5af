"""The `aiosd` command line: find the command, load only its module, dispatch, turn every user
error into one sentence.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 130 interrupted. `aiosd` with no arguments
prints the commands grouped by purpose and exits 0. Global options (`--socket`, `--json`,
`--config`, `--data-dir`, `--log-level`, `--log-format`) may stand before or after the command.
The CLI talks to a running daemon only through aiosd.cli.http; `init` and `run` work on the data
dir directly. Nothing here imports more than the standard library until a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from aiosd import __version__
from aiosd.cli.common import Env, Handler, add_common, split_globals
from aiosd.errors import AiosdError, UsageError


class Command(NamedTuple):
    name: str
    module: str  # under aiosd.cli; its REGISTER adds this command (and its siblings) to a parser
    group: str
    summary: str


GROUPS = ("Start and inspect a node", "Form the network", "Blocks and tasks", "Registries and metrics",
          "Policies and specs", "Images and assets", "Shell")
# One line per command: the table `aiosd`, `aiosd --help`, completion and the lazy loader read.
# A new command module adds its commands here (and nothing else in this file).
COMMANDS = (
    Command("init", "node_cmds", GROUPS[0], "create this node's identity and a new network"),
    Command("run", "node_cmds", GROUPS[0], "run the daemon in the foreground"),
    Command("stop", "node_cmds", GROUPS[0], "stop the local daemon (only this one)"),
    Command("status", "node_cmds", GROUPS[0], "show what the local daemon is"),
    Command("version", "node_cmds", GROUPS[0], "print the version"),
    Command("config", "node_cmds", GROUPS[0], "show the effective configuration"),
    Command("doctor", "net_cmds", GROUPS[0], "find out why nodes do not see each other"),
    Command("token", "net_cmds", GROUPS[1], "create, list and revoke join tokens"),
    Command("join", "net_cmds", GROUPS[1], "join an existing network with a token"),
    Command("nodes", "net_cmds", GROUPS[1], "list the network's nodes and whether they are alive"),
    Command("node", "net_cmds", GROUPS[1], "manage one node of the network"),
    Command("controller", "cluster_cmds", GROUPS[1], "who controls this node's cluster"),
    Command("cluster", "cluster_cmds", GROUPS[1], "list and describe clusters"),
    Command("apply", "spec_cmds", GROUPS[2], "apply AIOS component/block specs (create, update, or no change)"),
    Command("describe", "record_cmds", GROUPS[2], "show one record in detail (block, component, node, ...)"),
    Command("delete", "spec_cmds", GROUPS[2], "delete a block (its instances stop) or an unused component"),
    Command("infer", "spec_cmds", GROUPS[2], "send one task to a block and print its answer"),
    Command("mgmt", "spec_cmds", GROUPS[2], "send a management command to a block"),
    Command("tasks", "spec_cmds", GROUPS[2], "list long operations (apply) and their states"),
    Command("wait", "spec_cmds", GROUPS[2], "wait for a task to finish"),
    Command("ps", "runtime_cmds", GROUPS[2], "list block instances on this node"),
    Command("logs", "runtime_cmds", GROUPS[2], "print an instance's output"),
    Command("gpus", "runtime_cmds", GROUPS[2], "list this node's GPUs and which instances hold them"),
    Command("vdag", "vdag_cmds", GROUPS[2], "vDAGs: list, describe, delete, verify a receipt chain"),
    Command("llm", "llm_cmds", GROUPS[2], "LLM tools: plan a model split over nodes"),
    Command("get", "record_cmds", GROUPS[3], "list or read records: blocks, components, nodes, registry tables"),
    Command("watch", "record_cmds", GROUPS[3], "stream changes of records as they happen"),
    Command("registry", "record_cmds", GROUPS[3], "the same as `aiosd get TABLE --registry` (older name)"),
    Command("metrics", "registry_cmds", GROUPS[3], "this node's current metrics (AIOS names)"),
    Command("top", "registry_cmds", GROUPS[3], "a live table of the network's nodes and GPUs"),
    Command("policy", "policy_cmds", GROUPS[4], "publish, inspect and dry-run policies"),
    Command("template", "policy_cmds", GROUPS[4], "store and list spec templates"),
    Command("spec", "policy_cmds", GROUPS[4], "store and list reusable specs (spec store)"),
    Command("governance", "policy_cmds", GROUPS[4], "pre-check policies per mutating action (actionsPolicyMap)"),
    Command("image", "image_cmds", GROUPS[5], "build and share block images (no registry needed)"),
    Command("asset", "asset_cmds", GROUPS[5], "share files between nodes (content-addressed, verified)"),
    Command("user", "user_cmds", GROUPS[1], "create, list and revoke API users"),
    Command("audit", "audit_cmds", GROUPS[1], "who changed what (the audit trail)"),
    Command("completion", "completion", GROUPS[6], "print a bash or zsh completion script"),
)
BY_NAME = {c.name: c for c in COMMANDS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's signature is NoReturn
        self.print_usage(sys.stderr)
        self.exit(2, f"aiosd: error: {message}\n")


def overview() -> str:
    """`aiosd` with no arguments: the commands grouped by purpose (kubectl's style)."""
    width = max(len(c.name) for c in COMMANDS) + 2
    out = ["aiosd: a peer-to-peer AI operating system daemon.",
           "Every machine runs `aiosd run`; nodes form a network that serves AI blocks with no central service.",
           ""]
    for group in GROUPS:
        out.append(f"{group}:")
        out += [f"  {c.name:<{width}}{c.summary}" for c in COMMANDS if c.group == group]
        out.append("")
    out += ["Global options (before or after the command): --socket PATH, --json, --config FILE,",
            "  --data-dir DIR, --log-level LEVEL, --log-format text|json; --version prints the version.",
            "",
            "Start here: `aiosd run`, then `aiosd status`. `aiosd COMMAND --help` shows details and examples."]
    return "\n".join(out) + "\n"


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for the commands of MODULES (default: every command module)."""
    parser = _Parser(prog="aiosd", description=overview(), formatter_class=argparse.RawDescriptionHelpFormatter,
                     add_help=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in dict.fromkeys(modules if modules is not None else [c.module for c in COMMANDS]):
        module = importlib.import_module(f"aiosd.cli.{name}")
        for register in module.REGISTER:
            _add_common_to_leaves(register(sub))
    return parser


def _add_common_to_leaves(p: argparse.ArgumentParser) -> None:
    if p.get_default("handler") is not None:
        add_common(p)
    for action in p._actions:  # argparse keeps subparsers here
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_common_to_leaves(child)


def _unknown(name: str) -> int:
    import difflib

    close = difflib.get_close_matches(name, BY_NAME, n=1)
    hint = f"; did you mean `aiosd {close[0]}`?" if close else ""
    print(f"aiosd: error: unknown command {name!r}{hint} (`aiosd` lists the commands)", file=sys.stderr)
    return 2


def _is_user_error(e: BaseException) -> bool:
    """Errors of the storage and federation trees are one sentence for the user too (checked only
    when their package is loaded: an error of a package never imported cannot have been raised)."""
    for module, name in (("storage", "StorageError"), ("federation.errors", "FederationError")):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(e, getattr(mod, name)):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rest, opts = split_globals(list(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        print(f"aiosd: error: {e}", file=sys.stderr)
        return 2
    if not rest:
        sys.stdout.write(overview())
        return 0
    first = rest[0]
    if first in ("--version", "-V"):
        print(f"aiosd {__version__}")
        return 0
    if first in ("-h", "--help", "help"):
        if first == "help" and len(rest) > 1 and rest[1] in BY_NAME:
            rest = [rest[1], "--help"]
        else:
            sys.stdout.write(overview())
            return 0
    cmd = BY_NAME.get(rest[0])
    if cmd is None:
        if rest[0].startswith("-"):
            print(f"aiosd: error: unknown option {rest[0]!r} before the command (`aiosd` lists the commands)",
                  file=sys.stderr)
            return 2
        return _unknown(rest[0])
    args = build_parser([cmd.module]).parse_args(rest)
    for key, value in opts.items():
        setattr(args, key, value)
    return run_handler(args)


def run_handler(args: argparse.Namespace) -> int:
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        print("aiosd: error: give an action (see `aiosd COMMAND --help`)", file=sys.stderr)
        return 2
    try:
        return handler(args, Env(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `aiosd ... | head`: the reader left; say nothing more (and not on the closed pipe).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except AiosdError as e:
        print(f"aiosd: error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        if _is_user_error(e):
            print(f"aiosd: error: {e}", file=sys.stderr)
            return getattr(e, "exit_code", 1)
        import logging

        logging.getLogger("aiosd.cli").exception("unexpected failure")
        print("aiosd: internal error (a bug): the traceback is above; please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
