"""`aiosd audit`: who changed what, on this node or on the whole network (admin)."""

from __future__ import annotations

import argparse
import re
import time
import urllib.parse

from aiosd.cli.common import Env, Sub, command
from aiosd.cli.output import print_json, print_table
from aiosd.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """'90s', '30m', '1h', '7d' ago, or a unix timestamp. Raises UsageError."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if m is not None:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        ts = float(text)
    except ValueError:
        raise UsageError(f"--since: {text!r} is neither a duration like 30m, 1h, 7d nor a unix timestamp") from None
    if not 0 <= ts < 1e12:
        raise UsageError(f"--since: {text!r} is not a plausible unix timestamp")
    return ts


def cmd_audit(args: argparse.Namespace, env: Env) -> int:
    q: dict[str, str] = {"scope": "network" if args.network else "node", "limit": str(args.limit)}
    if args.since:
        q["since"] = repr(parse_since(args.since, time.time()))
    if args.user:
        q["user"] = args.user
    out = env.get("/v1/audit?" + urllib.parse.urlencode(q))
    if env.json:
        print_json(out)
        return 0
    print_table(["time", "node", "user", "role", "action", "target", "result"],
                [[time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["ts"])), e["node"][:12], e["user"], e["role"],
                  e["action"], e["target"], str(e["result"])] for e in out["entries"]])
    return 0


def register_audit(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "audit", "who changed what (the audit trail)",
                "The audit trail: every state-changing API request (who, role, node, action, target,\n"
                "result, time), refused ones included. --network adds every node's latest entries.",
                "examples:\n  aiosd audit --since 1h\n  aiosd audit --user alice --json\n  aiosd audit --network",
                cmd_audit)
    p.add_argument("--since", help="only entries since: 30m, 1h, 7d ago, or a unix timestamp")
    p.add_argument("--user", help="only this user's entries")
    p.add_argument("--network", action="store_true", help="the whole network's (latest entries of each node)")
    p.add_argument("--limit", type=int, default=1000, help="at most this many entries (default 1000)")
    return p


REGISTER = [register_audit]

__all__ = ["REGISTER", "parse_since"]
