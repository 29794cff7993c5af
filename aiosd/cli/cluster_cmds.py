"""`aiosd controller` and `aiosd cluster list|describe NAME`: who leads each cluster, term, voters."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from aiosd.cli.common import add_common
from aiosd.cli.output import print_json, print_kv, print_table
from aiosd.client import Client
from aiosd.config import Settings

Sub = Any  # argparse's _SubParsersAction is private


async def _get(settings: Settings, path: str) -> Any:
    async with Client(settings.socket_path) as c:
        return await c.get(path)


def _parser(sub: Sub, name: str, help_: str, description: str, epilog: str,
            handler: Callable[[argparse.Namespace, Settings], int] | None) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description, epilog=epilog,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if handler is not None:
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true", help="print the answer as JSON")
    return p


def cmd_controller(args: argparse.Namespace, settings: Settings) -> int:
    st = asyncio.run(_get(settings, "/v1/controller"))
    if args.json:
        print_json(st)
        return 0
    print_kv([("cluster", st["cluster"]), ("this node", f"{st['node_id']} ({st['role']})"),
              ("leader", st["leader"] or "none (no quorum reachable)"), ("term", st["term"]),
              ("commit index", st["commit_index"]), ("voters", ", ".join(st["voters"]) or "-"),
              ("learners", ", ".join(st["learners"]) or "-")])
    return 0


def register_controller(sub: Sub) -> argparse.ArgumentParser:
    return _parser(sub, "controller", "who controls this node's cluster",
                   "Show this node's view of its cluster's elected controller (the Raft leader): leader,\n"
                   "term, voters, learners and commit index.",
                   "examples:\n  aiosd controller\n  aiosd controller --json | jq -r .leader", cmd_controller)


def cmd_cluster_list(args: argparse.Namespace, settings: Settings) -> int:
    found = asyncio.run(_get(settings, "/v1/clusters"))
    if args.json:
        print_json(found)
        return 0
    print_table(["cluster", "nodes", "alive", "leader", "term", "voters", "instances"],
                [[c["name"], c["nodes"], c["alive"], c["leader"] or "-", c["term"] if c["term"] is not None else "-",
                  len(c["voters"]), c["instances"] if c["instances"] is not None else "-"]
                 for c in found["clusters"]])
    return 0


def cmd_cluster_describe(args: argparse.Namespace, settings: Settings) -> int:
    c = asyncio.run(_get(settings, f"/v1/clusters/{args.name}"))
    if args.json:
        print_json(c)
        return 0
    print_kv([("cluster", c["name"]), ("leader", c["leader"] or "-"), ("term", c["term"]),
              ("voters", ", ".join(c["voters"]) or "-"), ("learners", ", ".join(c["learners"]) or "-"),
              ("blocks", c["blocks"]), ("instances", c["instances"])])
    print()
    voters = set(c["voters"])
    print_table(["node", "addr", "state", "raft"],
                [[n["node_id"], n["addr"], n["state"], "voter" if n["node_id"] in voters else "learner"]
                 for n in c["nodes"]])
    return 0


def register_cluster(sub: Sub) -> argparse.ArgumentParser:
    p = _parser(sub, "cluster", "list and describe clusters",
                "Clusters of the network: their nodes, elected controller, term and voters.",
                "examples:\n  aiosd cluster list\n  aiosd cluster describe default --json", None)
    inner = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    ls = _parser(inner, "list", "list the network's clusters", "One line per cluster.",
                 "example:\n  aiosd cluster list", cmd_cluster_list)
    d = _parser(inner, "describe", "show one cluster", "Nodes, leader, term, voters and learners of NAME.",
                "example:\n  aiosd cluster describe default", cmd_cluster_describe)
    d.add_argument("name", help="cluster name")

    for q in (ls, d):
        add_common(q)
    return p


REGISTER = [register_controller, register_cluster]

__all__ = ["REGISTER"]
