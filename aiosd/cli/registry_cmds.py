"""`aiosd get`, `aiosd watch`, `aiosd top`, `aiosd metrics`: the registries and metrics.

`aiosd get` reads registry tables and this node's component/block catalog (the catalog view
comes from spec_cmds); `aiosd registry` is the older name for the table reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from aiosd.cli import spec_cmds
from aiosd.cli.node_cmds import Sub, _add
from aiosd.cli.output import print_json, print_table
from aiosd.client import Client
from aiosd.config import Settings
from aiosd.errors import ApiError, DaemonNotRunning, UsageError

MAX_TOP_REFRESHES = 1_000_000  # bounded loop: ~58 days at 5 s
# Registry tables (aiosd.registry.service.TABLES; not imported: the CLI starts without the replication stack).
TABLES = ("assets", "blocks", "clusters", "components", "images", "inference_servers", "metrics", "nodes",
          "policies", "specs", "tasks", "templates", "vdags")
# Names `aiosd get` reads from the network's tables, or with --local from this node's catalog.
CATALOG_KINDS = {"component": "components", "components": "components", "block": "blocks", "blocks": "blocks"}


def _api(settings: Settings, method: str, path: str, body: Any = None) -> Any:
    async def go() -> Any:
        async with Client(settings.socket_path) as c:
            return await c.request(method, path, body)

    return asyncio.run(go())


def load_filter(text: str) -> Any:
    """A filter given as inline JSON or as a path to a JSON file."""
    src = text
    if not text.lstrip().startswith(("{", "[")):
        p = Path(text)
        if not p.is_file():
            raise UsageError(f"--filter: {text!r} is neither JSON nor a readable file")
        src = p.read_text()
    try:
        return json.loads(src)
    except ValueError as e:
        raise UsageError(f"--filter: not valid JSON: {e}") from None


def _short(v: Any, width: int = 60) -> str:
    s = json.dumps(v, separators=(",", ":"), sort_keys=True)
    return s if len(s) <= width else s[: width - 1] + "…"


# ----- get / registry -------------------------------------------------------------------------------
def cmd_get(args: argparse.Namespace, settings: Settings) -> int:
    name = args.table.lower()
    if name in CATALOG_KINDS and args.local:
        catalog = argparse.Namespace(kind=name, id=args.key, json=args.json, wide=args.wide)
        return spec_cmds.cmd_get(catalog, settings)
    if name in CATALOG_KINDS:
        return _network_get(args, settings, CATALOG_KINDS[name])
    if name not in TABLES:
        raise UsageError(f"unknown kind {args.table!r}; use a registry table ({', '.join(TABLES)}) "
                         "or component, block")
    args.table = name
    return cmd_registry(args, settings)


def _network_get(args: argparse.Namespace, settings: Settings, table: str) -> int:
    """Components or blocks as the network's registry holds them. One key: this node's catalog record
    with its live status (givenUp, autoscaler...) where this node owns it, else the network's record."""
    if args.key:
        try:
            local = _api(settings, "GET", f"/v1/{table}/{args.key}")
        except ApiError as e:
            if e.status != 404:
                raise
            local = None
        if local is not None:
            catalog = argparse.Namespace(kind=table, id=args.key, json=args.json, wide=args.wide)
            return spec_cmds.cmd_get(catalog, settings)
        out = _api(settings, "GET", f"/v1/registry/{table}/{args.key}")
        print_json(out["value"])
        return 0
    if args.filter:
        out = _api(settings, "POST", f"/v1/registry/{table}/query", load_filter(args.filter))
    else:
        out = _api(settings, "GET", f"/v1/registry/{table}")
    if args.json:
        print_json(out)
        return 0
    vals = [i["value"] for i in out["items"]]
    if table == "components":
        print_table(["uri", "origin"], [[i["key"], i["version"]["origin"][:12]] for i in out["items"]])
        return 0
    headers = ["id", "component", "cluster", "placement", "nodes", "healthy", "desired"]
    rows = [[v.get("id"), v.get("componentUri", "-"), v.get("cluster", "-"), v.get("placement", "-"),
             ",".join(n[:12] for n in v.get("nodes", [])) or "-", v.get("status", {}).get("healthy", 0),
             v.get("desiredInstances", "-")] for v in vals]
    if args.wide:
        headers.append("policies")
        for row, v in zip(rows, vals, strict=True):
            row.append(",".join(f"{k}={p.get('policyRuleURI')}" for k, p in v.get("policies", {}).items()) or "-")
    print_table(headers, rows)
    return 0


def register_get(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "get", "list or read registry records (with an AIOS filter), components or blocks",
             "Read the network's replicated registries from this node's copy, or this node's catalog.\n"
             f"Tables: {', '.join(TABLES)}.\n"
             "`components`/`component` and `blocks`/`block` show the network's records (every node's blocks,\n"
             "the components admin nodes applied); --local shows this node's catalog (as `aiosd apply` stored it).\n"
             "A filter is the AIOS one: {variable, operator, value} on dot paths of the record's value,\n"
             "operators ==, !=, IN, IN ANY, >, >=, <, <=, LIKE, nested {logicalOperator: AND|OR, conditions}.",
             "examples:\n  aiosd get nodes\n  aiosd get specs my-spec --json\n"
             "  aiosd get tasks --filter '{\"variable\": \"state\", \"operator\": \"==\", \"value\": \"done\"}'\n"
             "  aiosd get metrics --filter '{\"variable\": \"gpu.totalFreeMem\", \"operator\": \">\", "
             "\"value\": 8000}' --json\n"
             "  aiosd get templates --filter filter.json\n"
             "  aiosd get blocks --wide\n  aiosd get block echo-1 --json\n  aiosd get blocks --local", cmd_get)
    p.add_argument("table", metavar="TABLE", help="registry table, or component(s)/block(s) for the catalog")
    p.add_argument("key", nargs="?", metavar="KEY", help="one record's key (block id or component URI)")
    p.add_argument("--filter", metavar="FILE|JSON", help="an AIOS filter document (inline JSON or a file)")
    p.add_argument("--registry", action="store_true", help="the network's records (the default; kept for old scripts)")
    p.add_argument("--local", action="store_true", help="components/blocks: this node's catalog, not the network's")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--wide", action="store_true", help="more columns (catalog views)")
    return p


def cmd_registry(args: argparse.Namespace, settings: Settings) -> int:
    if args.key:
        out = _api(settings, "GET", f"/v1/registry/{args.table}/{args.key}")
        print_json(out) if args.json else print_json(out["value"])
        return 0
    if args.filter:
        out = _api(settings, "POST", f"/v1/registry/{args.table}/query", load_filter(args.filter))
    else:
        out = _api(settings, "GET", f"/v1/registry/{args.table}")
    if args.json:
        print_json(out)
        return 0
    print_table(["key", "origin", "value"],
                [[i["key"], i["version"]["origin"], _short(i["value"])] for i in out["items"]])
    return 0


def register_registry(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "registry", "the same as `aiosd get TABLE` (registry tables only; older name)",
             "Read the network's registries from this node's replicated copy (see `aiosd get`).\n"
             "Tables: nodes, clusters, components, specs, templates, policies, vdags, inference_servers,\n"
             "assets, images, tasks, metrics.",
             "examples:\n  aiosd registry nodes\n  aiosd registry specs my-spec --json\n"
             "  aiosd registry metrics --filter '{\"variable\": \"gpu.totalFreeMem\", \"operator\": \">\", "
             "\"value\": 8000}'\n  aiosd registry templates --filter filter.json", cmd_registry)
    p.add_argument("table", help="registry table")
    p.add_argument("key", nargs="?", help="one record's key")
    p.add_argument("--filter", metavar="FILE|JSON", help="an AIOS filter document (inline JSON or a file)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


# ----- watch ----------------------------------------------------------------------------------------
async def _watch(settings: Settings, tables: list[str], limit: int | None) -> int:
    conn = aiohttp.UnixConnector(path=str(settings.socket_path))
    seen = 0
    try:
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(sock_read=60)) as s, \
                s.get("http://aiosd/v1/watch", params={"table": ",".join(tables)}) as resp:
            if resp.status != 200:
                err = (await resp.json()).get("error", {})
                raise UsageError(str(err.get("message", resp.status)))
            op = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    op = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    ev = json.loads(line.removeprefix("data: "))
                    print(f"{op:6} {ev['table']}/{ev['key']} {_short(ev['value'], 100)}", flush=True)
                    seen += 1
                    if limit is not None and seen >= limit:
                        return 0
    except (aiohttp.ClientConnectorError, FileNotFoundError, ConnectionRefusedError) as e:
        raise DaemonNotRunning(f"aiosd is not running (nothing answers on {settings.socket_path})") from e
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_watch(settings, args.table, args.count))
    except KeyboardInterrupt:
        return 0


def register_watch(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "watch", "stream changes of registry tables as they happen",
             "Print one line per change (put or delete) of the given tables, local or replicated.",
             "examples:\n  aiosd watch specs\n  aiosd watch nodes metrics --count 10", cmd_watch)
    p.add_argument("table", nargs="+", help="tables to watch")
    p.add_argument("--count", type=int, help="exit after this many changes")
    return p


# ----- metrics --------------------------------------------------------------------------------------
def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    path = "/v1/metrics/clusters" if args.clusters else "/v1/metrics"
    out = _api(settings, "GET", path)
    if args.json:
        print_json(out)
        return 0
    if args.clusters:
        for cluster, agg in out["clusters"].items():
            print(f"cluster {cluster}")
            print_table(["metric", "value"], [[k, f"{v:g}"] for k, v in agg.items()])
        return 0
    print_table(["metric", "value"], [[k, f"{v:g}"] for k, v in out["metrics"].items()])
    return 0


def register_metrics(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "metrics", "this node's current metrics (AIOS names)",
             "Print this node's latest sample: vcpu.*, memory.*, disk.*, network.*, gpu.*.",
             "examples:\n  aiosd metrics\n  aiosd metrics --clusters\n  aiosd metrics --json", cmd_metrics)
    p.add_argument("--clusters", action="store_true", help="per-cluster aggregates of every node's summary")
    p.add_argument("--json", action="store_true", help="print as JSON")
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


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with _cbreak() as interactive:
            for _ in range(1 if args.once or not interactive else MAX_TOP_REFRESHES):
                out = _api(settings, "GET", "/v1/metrics/nodes")
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
    p = _add(sub, "top", "a live table of the network's nodes and GPUs",
             "Refresh a table of every node's load, memory and GPUs (from the replicated metrics).\n"
             "Press q or Ctrl-C to quit.", "examples:\n  aiosd top\n  aiosd top --interval 1\n  aiosd top --once",
             cmd_top)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    return p


REGISTER = [register_get, register_registry, register_watch, register_metrics, register_top]

__all__ = ["REGISTER", "load_filter", "render_top"]
