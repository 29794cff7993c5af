"""`aiosd ps | logs | gpus`: what runs on this node, its output, and the GPUs."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from aiosd.cli.common import Env, Sub, command, q
from aiosd.cli.output import human_duration, print_table
from aiosd.errors import UsageError


def cmd_ps(args: argparse.Namespace, env: Env) -> int:
    def human(out: Any) -> None:
        now = time.time()
        rows = []
        for i in out["instances"]:
            started = i["started_at"]
            up = human_duration(now - started) if started else "-"
            gpus = ",".join(str(g["index"]) for g in i["gpus"]) or "-"
            last = i["last_log_lines"]
            note = i["error"] or (last[-1] if i["state"] == "crashloop" and last else "")
            rows.append([i["instance_id"], i["block_id"], i["state"], i["restarts"], gpus, up, i["served"],
                         note or "-"])
        print_table(["instance", "block", "state", "restarts", "gpus", "uptime", "served", "note"], rows)

    return env.show(env.get("/v1/ps"), human)


def register_ps(sub: Sub) -> argparse.ArgumentParser:
    return command(sub, "ps", "list block instances on this node",
                   "Instances on this node: block, state (starting, healthy, unhealthy, crashloop, ...), restarts,\n"
                   "GPUs, uptime and tasks served; a crash-looping instance shows its last output line.",
                   "examples:\n  aiosd ps\n  aiosd ps --json | jq '.instances[].state'", cmd_ps)


def cmd_logs(args: argparse.Namespace, env: Env) -> int:
    if args.tail < 0:
        raise UsageError("--tail must be >= 0")
    path = f"/v1/logs/{q(args.instance)}?tail={args.tail}" + ("&follow=1" if args.follow else "")
    for line in env.api(timeout_s=None if args.follow else 30).lines(path):
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()
    return 0


def register_logs(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "logs", "print an instance's output",
                "Print the last lines an instance wrote (stdout and stderr); -f keeps following.",
                "examples:\n  aiosd logs echo-1-0\n  aiosd logs echo-1-0 --tail 20 -f", cmd_logs, json_help=None)
    p.add_argument("instance", help="instance id (from `aiosd ps`)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", type=int, default=100, help="lines of history (default 100)")
    return p


def cmd_gpus(args: argparse.Namespace, env: Env) -> int:
    def human(out: Any) -> None:
        if not out["gpus"]:
            print("no GPUs on this node (no NVIDIA driver or no device)")
            return
        print_table(["index", "name", "memory", "used", "util", "holders"],
                    [[g["index"], g["name"], f"{g['memory_total_mb']} MB", f"{g['memory_used_mb']} MB",
                      f"{g['util_pct']}%", ",".join(g["holders"]) or "-"]
                     for g in out["gpus"]])

    return env.show(env.get("/v1/gpus"), human)


def register_gpus(sub: Sub) -> argparse.ArgumentParser:
    return command(sub, "gpus", "list this node's GPUs and which instances hold them",
                   "The NVML inventory with live memory/utilization and the instances holding each GPU.",
                   "examples:\n  aiosd gpus\n  aiosd gpus --json", cmd_gpus)


REGISTER = [register_ps, register_logs, register_gpus]

__all__ = ["REGISTER"]
