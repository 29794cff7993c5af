"""`aiosd metrics`, `aiosd top`: this node's metrics and a live table of the network's nodes."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

from aiosd.cli.common import Env, Sub, command
from aiosd.cli.output import print_table

MAX_TOP_REFRESHES = 1_000_000  # bounded loop: ~58 days at 5 s


# ----- metrics --------------------------------------------------------------------------------------
def _show_metrics(out: Any) -> None:
    if "clusters" in out:
        for cluster, agg in out["clusters"].items():
            print(f"cluster {cluster}")
            print_table(["metric", "value"], [[k, f"{v:g}"] for k, v in agg.items()])
        return
    print_table(["metric", "value"], [[k, f"{v:g}"] for k, v in out["metrics"].items()])


def cmd_metrics(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get("/v1/metrics/clusters" if args.clusters else "/v1/metrics"), _show_metrics)


def register_metrics(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "metrics", "this node's current metrics (AIOS names)",
             "Print this node's latest sample: vcpu.*, memory.*, disk.*, network.*, gpu.*.",
             "examples:\n  aiosd metrics\n  aiosd metrics --clusters\n  aiosd metrics --json", cmd_metrics)
    p.add_argument("--clusters", action="store_true", help="per-cluster aggregates of every node's summary")
    return p


# ----- top ------------------------------------------------------------------------------------------
def render_top(nodes: list[dict[str, Any]], width: int) -> str:
    lines = [f"aiosd top — {len(nodes)} node(s) — {time.strftime('%H:%M:%S')} — q quits", ""]
    head = f"{'NODE':<20} {'CLUSTER':<10} {'LOAD1':>6} {'LOAD15':>6} {'MEM%':>5} {'GPUS':>4} {'GPU FREE MiB':>12} {'AGE':>5}"
    lines.append(head)
    now = time.time()
    for n in sorted(nodes, key=lambda x: str(x.get("node_id"))):
        v, mem, gpu = n.get("vcpu", {}), n.get("memory", {}), n.get("gpu", {})
        lines.append(f"{str(n.get('node_id'))[:20]:<20} {str(n.get('cluster'))[:10]:<10} "
                     f"{v.get('load_1m', 0):>6.2f} {v.get('load_15m', 0):>6.2f} {mem.get('averageUtil', 0):>5.1f} "
                     f"{int(gpu.get('count', 0)):>4} {gpu.get('totalFreeMem', 0):>12.0f} "
                     f"{max(0, now - float(n.get('ts', now))):>4.0f}s")
    gpus = [(n["node_id"], g) for n in nodes for g in n.get("gpus", [])]
    if gpus:
        lines += ["", f"{'NODE':<20} {'GPU':<14} {'UTIL%':>5} {'USED MiB':>9} {'TOTAL MiB':>9} {'TEMP':>4} {'W':>6}"]
        for node, g in gpus:
            lines.append(f"{str(node)[:20]:<20} {str(g['gpu_id'])[:14]:<14} {g['cudaUtilization']:>5} "
                         f"{g['usedMem']:>9} {g['totalMem']:>9} {g['temperature']:>4} {g['powerDrawW']:>6.1f}")
    return "\n".join(line[:width] for line in lines)


@contextlib.contextmanager
def _cbreak() -> Iterator[bool]:
    """Keys without Enter while top runs; the terminal is restored on any exit."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        yield False
        return
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    sys.stdout.write("\x1b[?25l")  # hide the cursor
    try:
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
        sys.stdout.write("\x1b[?25h\n")
        sys.stdout.flush()


def cmd_top(args: argparse.Namespace, env: Env) -> int:
    try:
        with _cbreak() as interactive:
            for _ in range(1 if args.once or not interactive else MAX_TOP_REFRESHES):
                out = env.get("/v1/metrics/nodes")
                width = os.get_terminal_size().columns if interactive else 200
                frame = render_top(out["nodes"], width)
                sys.stdout.write(("\x1b[H\x1b[2J" if interactive else "") + frame + "\n")
                sys.stdout.flush()
                if args.once or not interactive:
                    break
                ready, _, _ = select.select([sys.stdin], [], [], args.interval)
                if ready and os.read(sys.stdin.fileno(), 32).lower().startswith(b"q"):
                    break
    except KeyboardInterrupt:
        pass
    return 0


def register_top(sub: Sub) -> argparse.ArgumentParser:
    p = command(sub, "top", "a live table of the network's nodes and GPUs",
             "Refresh a table of every node's load, memory and GPUs (from the replicated metrics).\n"
             "Press q or Ctrl-C to quit.", "examples:\n  aiosd top\n  aiosd top --interval 1\n  aiosd top --once",
             cmd_top, json_help=None)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    return p


REGISTER = [register_metrics, register_top]

__all__ = ["REGISTER", "render_top"]
