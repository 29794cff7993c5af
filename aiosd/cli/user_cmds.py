"""`aiosd user create|list|revoke`: the network's users and their API tokens (admin)."""

from __future__ import annotations

import argparse
import sys
import time

from aiosd.cli.common import Env, Sub, command, q
from aiosd.cli.output import print_json, print_table

ROLES = ("admin", "operator", "viewer", "inference")


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def cmd_user_create(args: argparse.Namespace, env: Env) -> int:
    out = env.post("/v1/users", {"name": args.name, "role": args.role})
    if env.json:
        print_json(out)
        return 0
    print(out["token"])
    print(f"# user {out['name']} ({out['role']}): this token is shown once; use it as "
          "`Authorization: Bearer TOKEN` on any node's API", file=sys.stderr)
    return 0


def cmd_user_list(args: argparse.Namespace, env: Env) -> int:
    out = env.get("/v1/users")
    if env.json:
        print_json(out)
        return 0
    print_table(["name", "role", "state", "created", "by"],
                [[u["name"], u["role"], "revoked" if u.get("revoked_at") else "active", _when(u["created_at"]),
                  u["created_by"]] for u in out["users"]])
    return 0


def cmd_user_revoke(args: argparse.Namespace, env: Env) -> int:
    out = env.call("DELETE", f"/v1/users/{q(args.name)}")
    if env.json:
        print_json(out)
    else:
        print(f"user {out['name']} revoked: its token is refused on every node once the record has spread")
    return 0


def register_user(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "user", "create, list and revoke API users",
                "Users of the network's HTTP API, each with a role (admin, operator, viewer, inference).\n"
                "Users are network records: a token works on every node.",
                "examples:\n  aiosd user create alice --role operator\n  aiosd user list\n  aiosd user revoke alice")
    usub = p.add_subparsers(dest="user_cmd", metavar="ACTION", required=True)
    c = command(usub, "create", "create a user and print its token once",
             "Create a user with a role and print its API token (only a hash of it is stored).",
             "examples:\n  aiosd user create alice --role operator\n  aiosd user create app --role inference",
             cmd_user_create)
    c.add_argument("name", help="user name: a-z, 0-9, _ and -, starting with a letter")
    c.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    command(usub, "list", "list users (no tokens)", "List the network's users and their roles.",
              "example:\n  aiosd user list --json", cmd_user_list)
    rv = command(usub, "revoke", "revoke a user's token", "Revoke a user: its token is refused from now on.",
              "example:\n  aiosd user revoke alice", cmd_user_revoke)
    rv.add_argument("name", help="user name (see `aiosd user list`)")
    return p


REGISTER = [register_user]

__all__ = ["REGISTER"]
