"""`aiosd controller` and `aiosd cluster list|describe NAME`: who leads each cluster, term, voters."""

from __future__ import annotations

import argparse
from typing import Any

from aiosd.cli.common import Env, Sub, q
from aiosd.cli.common import command as _parser
from aiosd.cli.output import print_kv, print_table


def cmd_controller(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get("/v1/controller"), _show_controller)


def _show_controller(st: Any) -> None:
    print_kv([("cluster", st["cluster"]), ("this node", f"{st['node_id']} ({st['role']})"),
              ("leader", st["leader"] or "none (no quorum reachable)"), ("term", st["term"]),
              ("commit index", st["commit_index"]), ("voters", ", ".join(st["voters"]) or "-"),
              ("learners", ", ".join(st["learners"]) or "-")])


def register_controller(sub: Sub) -> argparse.ArgumentParser:
    return _parser(sub, "controller", "who controls this node's cluster",
                   "Show this node's view of its cluster's elected controller (the Raft leader): leader,\n"
                   "term, voters, learners and commit index.",
                   "examples:\n  aiosd controller\n  aiosd controller --json | jq -r .leader", cmd_controller)


def cmd_cluster_list(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get("/v1/clusters"), _show_clusters)


def _show_clusters(found: Any) -> None:
    print_table(["cluster", "nodes", "alive", "leader", "term", "voters", "instances"],
                [[c["name"], c["nodes"], c["alive"], c["leader"] or "-", c["term"] if c["term"] is not None else "-",
                  len(c["voters"]), c["instances"] if c["instances"] is not None else "-"]
                 for c in found["clusters"]])


def cmd_cluster_describe(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get(f"/v1/clusters/{q(args.name)}"), _show_cluster)


def _show_cluster(c: Any) -> None:
    print_kv([("cluster", c["name"]), ("leader", c["leader"] or "-"), ("term", c["term"]),
              ("voters", ", ".join(c["voters"]) or "-"), ("learners", ", ".join(c["learners"]) or "-"),
              ("blocks", c["blocks"]), ("instances", c["instances"])])
    print()
    voters = set(c["voters"])
    print_table(["node", "addr", "state", "raft"],
                [[n["node_id"], n["addr"], n["state"], "voter" if n["node_id"] in voters else "learner"]
                 for n in c["nodes"]])


def register_cluster(sub: Sub) -> argparse.ArgumentParser:
    p = _parser(sub, "cluster", "list and describe clusters",
                "Clusters of the network: their nodes, elected controller, term and voters.",
                "examples:\n  aiosd cluster list\n  aiosd cluster describe default --json", None)
    inner = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    _parser(inner, "list", "list the network's clusters", "One line per cluster.",
                 "example:\n  aiosd cluster list", cmd_cluster_list)
    d = _parser(inner, "describe", "show one cluster", "Nodes, leader, term, voters and learners of NAME.",
                "example:\n  aiosd cluster describe default", cmd_cluster_describe)
    d.add_argument("name", help="cluster name")
    return p


REGISTER = [register_controller, register_cluster]

__all__ = ["REGISTER"]
