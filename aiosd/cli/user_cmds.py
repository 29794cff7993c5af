"""`aiosd user create|list|revoke`: the network's users and their API tokens (admin)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from aiosd.cli.common import add_common
from aiosd.cli.node_cmds import Sub, _add
from aiosd.cli.output import print_json, print_table
from aiosd.client import Client
from aiosd.config import Settings

ROLES = ("admin", "operator", "viewer", "inference")


def _api(settings: Settings, method: str, path: str, body: Any = None) -> Any:
    async def go() -> Any:
        async with Client(settings.socket_path) as c:
            return await c.request(method, path, body)

    return asyncio.run(go())


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def cmd_user_create(args: argparse.Namespace, settings: Settings) -> int:
    out = _api(settings, "POST", "/v1/users", {"name": args.name, "role": args.role})
    if args.json:
        print_json(out)
        return 0
    print(out["token"])
    print(f"# user {out['name']} ({out['role']}): this token is shown once; use it as "
          "`Authorization: Bearer TOKEN` on any node's API", file=sys.stderr)
    return 0


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    out = _api(settings, "GET", "/v1/users")
    if args.json:
        print_json(out)
        return 0
    print_table(["name", "role", "state", "created", "by"],
                [[u["name"], u["role"], "revoked" if u.get("revoked_at") else "active", _when(u["created_at"]),
                  u["created_by"]] for u in out["users"]])
    return 0


def cmd_user_revoke(args: argparse.Namespace, settings: Settings) -> int:
    out = _api(settings, "DELETE", f"/v1/users/{args.name}")
    if args.json:
        print_json(out)
    else:
        print(f"user {out['name']} revoked: its token is refused on every node once the record has spread")
    return 0


def register_user(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "user", help="create, list and revoke API users",
        description="Users of the network's HTTP API, each with a role (admin, operator, viewer, inference).\n"
                    "Users are network records: a token works on every node.",
        epilog="examples:\n  aiosd user create alice --role operator\n  aiosd user list\n  aiosd user revoke alice",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    usub = p.add_subparsers(dest="user_cmd", metavar="ACTION", required=True)
    c = _add(usub, "create", "create a user and print its token once",
             "Create a user with a role and print its API token (only a hash of it is stored).",
             "examples:\n  aiosd user create alice --role operator\n  aiosd user create app --role inference",
             cmd_user_create)
    c.add_argument("name", help="user name: a-z, 0-9, _ and -, starting with a letter")
    c.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    ls = _add(usub, "list", "list users (no tokens)", "List the network's users and their roles.",
              "example:\n  aiosd user list --json", cmd_user_list)
    rv = _add(usub, "revoke", "revoke a user's token", "Revoke a user: its token is refused from now on.",
              "example:\n  aiosd user revoke alice", cmd_user_revoke)
    rv.add_argument("name", help="user name (see `aiosd user list`)")
    for q in (c, ls, rv):
        q.add_argument("--json", action="store_true", help="print as JSON")
        add_common(q)
    return p


REGISTER = [register_user]

__all__ = ["REGISTER"]
