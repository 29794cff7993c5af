"""`aiosd ps | logs | gpus`: what runs on this node, its output, and the GPUs."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from aiosd.cli.output import human_duration, print_json, print_table
from aiosd.client import Client
from aiosd.config import Settings
from aiosd.errors import DaemonNotRunning, UsageError

Sub = Any


def _add(sub: Sub, name: str, help_: str, description: str, epilog: str,
         handler: Callable[[argparse.Namespace, Settings], int]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description, epilog=epilog,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=handler)
    return p


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> Any:
        async with Client(settings.socket_path) as c:
            return await c.get("/v1/ps")

    out = asyncio.run(go())
    if args.json:
        print_json(out)
        return 0
    now = time.time()
    rows = []
    for i in out["instances"]:
        up = human_duration(now - i["started_at"]) if i["started_at"] else "-"
        gpus = ",".join(str(g["index"]) for g in i["gpus"]) or "-"
        note = i["error"] or (i["last_log_lines"][-1] if i["state"] == "crashloop" and i["last_log_lines"] else "")
        rows.append([i["instance_id"], i["block_id"], i["state"], i["restarts"], gpus, up, i["served"], note or "-"])
    print_table(["instance", "block", "state", "restarts", "gpus", "uptime", "served", "note"], rows)
    return 0


def register_ps(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "ps", "list block instances on this node",
             "Instances on this node: block, state (starting, healthy, unhealthy, crashloop, ...), restarts,\n"
             "GPUs, uptime and tasks served; a crash-looping instance shows its last output line.",
             "examples:\n  aiosd ps\n  aiosd ps --json | jq '.instances[].state'", cmd_ps)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    if args.tail < 0:
        raise UsageError("--tail must be >= 0")

    async def go() -> int:
        q = f"?tail={args.tail}" + ("&follow=1" if args.follow else "")
        conn = aiohttp.UnixConnector(path=str(settings.socket_path))
        timeout = aiohttp.ClientTimeout(total=None if args.follow else 30)
        try:
            async with (aiohttp.ClientSession(connector=conn, timeout=timeout) as s,
                        s.get(f"http://aiosd/v1/logs/{args.instance}{q}") as r):
                if r.status != 200:
                    doc = await r.json(content_type=None)
                    print(f"aiosd: error: {doc['error']['message']}", file=sys.stderr)
                    return 1
                async for line in r.content:
                    sys.stdout.write(line.decode(errors="replace"))
                    sys.stdout.flush()
        except (aiohttp.ClientConnectorError, FileNotFoundError) as e:
            raise DaemonNotRunning(f"aiosd is not running (nothing answers on {settings.socket_path})") from e
        return 0

    return asyncio.run(go())


def register_logs(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "logs", "print an instance's output",
             "Print the last lines an instance wrote (stdout and stderr); -f keeps following.",
             "examples:\n  aiosd logs echo-1-0\n  aiosd logs echo-1-0 --tail 20 -f", cmd_logs)
    p.add_argument("instance", help="instance id (from `aiosd ps`)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", type=int, default=100, help="lines of history (default 100)")
    return p


def cmd_gpus(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> Any:
        async with Client(settings.socket_path) as c:
            return await c.get("/v1/gpus")

    out = asyncio.run(go())
    if args.json:
        print_json(out)
        return 0
    if not out["gpus"]:
        print("no GPUs on this node (no NVIDIA driver or no device)")
        return 0
    print_table(["index", "name", "memory", "used", "util", "holders"],
                [[g["index"], g["name"], f"{g['memory_total_mb']} MB", f"{g['memory_used_mb']} MB",
                  f"{g['util_pct']}%", ",".join(g["holders"]) or "-"] for g in out["gpus"]])
    return 0


def register_gpus(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "gpus", "list this node's GPUs and which instances hold them",
             "The NVML inventory with live memory/utilization and the instances holding each GPU.",
             "examples:\n  aiosd gpus\n  aiosd gpus --json", cmd_gpus)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


REGISTER = [register_ps, register_logs, register_gpus]

__all__ = ["REGISTER"]
