"""`aiosd init | run | stop | status | version | config`: the node's own lifecycle."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from aiosd import __version__
from aiosd.cli.common import Env, Handler, Sub, command
from aiosd.cli.output import human_duration, print_kv
from aiosd.errors import DaemonNotRunning

STOP_POLL_S = 0.1


def _add(sub: Sub, name: str, help_: str, description: str, epilog: str, handler: Handler) -> argparse.ArgumentParser:
    return command(sub, name, help_, description, epilog, handler, json_help=None)


# ----- init ---------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace, env: Env) -> int:
    from aiosd.identity_files import init_network
    from aiosd.node import check_data_dir
    from storage import Store

    settings = env.settings
    data_dir = settings.data_dir
    check_data_dir(data_dir)
    # Hold the store lock while we write, so a running daemon's identity is never replaced.
    with Store.open(data_dir / "db"):
        ident = init_network(data_dir, cluster=settings.node.cluster, force=args.force)
    info = {"node_id": ident.node_id, "network_id": ident.network.network_id, "cluster": ident.cert.cluster,
            "ca_fingerprint": ident.network.ca_fingerprint, "data_dir": str(data_dir)}

    def human(_: object) -> None:
        print(f"initialised a new network in {data_dir}")
        print_kv(list(info.items()))
        print("next: `aiosd run` starts the daemon")

    return env.show(info, human)


def register_init(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "init", "create this node's identity and a new network",
             "Create the node key (ed25519, mode 0600), a new network CA and this node's certificate.\n"
             "To add a machine to an existing network use `aiosd join TOKEN` instead.",
             "examples:\n  aiosd init\n  aiosd init --cluster lab --data-dir /srv/aiosd\n"
             "  aiosd init --force        # replace an existing identity (the node gets a new id)",
             cmd_init)
    p.add_argument("--cluster", help="cluster this node belongs to (default: default)")
    p.add_argument("--force", action="store_true", help="replace an existing identity")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


# ----- run ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, env: Env) -> int:
    import asyncio

    from aiosd.logs import setup_logging
    from aiosd.node import Node

    settings = env.settings
    setup_logging(settings.log.level, settings.log.format)
    asyncio.run(Node(settings).run())
    return 0


def register_run(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "run", "run the daemon in the foreground",
             "Run the daemon in the foreground until SIGTERM or Ctrl-C. On an uninitialised data dir it first\n"
             "creates a single-node network. It tells systemd when it is ready (Type=notify) and logs one\n"
             "line per lifecycle step.",
             "examples:\n  aiosd run\n  aiosd run --data-dir /tmp/n1 --socket /tmp/n1.sock\n"
             "  aiosd run --api-port 8470     # also serve the API on 127.0.0.1:8470 (bearer token)\n"
             "stop it with Ctrl-C, SIGTERM or `aiosd stop` (block containers outlive the daemon and are\n"
             "adopted by the next `aiosd run`).",
             cmd_run)
    p.add_argument("--cluster", help="cluster of a new node (first start only)")
    p.add_argument("--api-port", type=int, help="also serve the API on 127.0.0.1:PORT (token in DATA_DIR/api.token)")
    p.add_argument("--p2p-host", help="address the p2p listener binds (default 0.0.0.0)")
    p.add_argument("--p2p-port", type=int, help="p2p port (default 7701)")
    p.add_argument("--mdns", action=argparse.BooleanOptionalAction, default=None,
                   help="announce and browse peers with mDNS (off unless the config turns it on)")
    p.add_argument("--seed", action="append", metavar="HOST:PORT", help="peer to contact at start (repeatable)")
    p.add_argument("--driver", choices=["auto", "podman", "process"], help="how block instances run")
    return p


# ----- status / stop ------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, env: Env) -> int:
    def human(st: Any) -> None:
        print_kv([
            ("node", st["node_id"]), ("network", st["network_id"]), ("cluster", st["cluster"]),
            ("version", st["version"]), ("uptime", human_duration(st["uptime_s"])), ("data dir", st["data_dir"]),
            ("roles", ", ".join(st["roles"]) or "-"), ("peers", len(st["peers"])),
        ])

    return env.show(env.get("/v1/status"), human)


def register_status(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "status", "show what the local daemon is",
             "Ask the local daemon (over its API socket) for its node id, network, cluster, version, uptime\n"
             "and peers.", "examples:\n  aiosd status\n  aiosd status --json | jq -r .node_id", cmd_status)
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    return p


def _alive(pid: int) -> bool:
    """Whether PID still runs (an exited process its parent has not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def cmd_stop(args: argparse.Namespace, env: Env) -> int:
    api = env.api(timeout_s=10)
    try:
        out = api.post("/v1/stop")
    except DaemonNotRunning:
        print(f"aiosd is not running (nothing answers on {api.where}); nothing to stop", file=sys.stderr)
        return 0
    pid = int(out["pid"])
    deadline = time.monotonic() + args.timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(STOP_POLL_S)
    if _alive(pid):
        print(f"aiosd: error: the daemon (pid {pid}) is still stopping after {args.timeout:g} s", file=sys.stderr)
        return 1
    result = {"stopped": True, "pid": pid, "socket": api.where}
    return env.show(result, lambda r: print(f"aiosd stopped (pid {r['pid']})"))


def register_stop(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "stop", "stop the local daemon (only this one)",
             "Ask the daemon that answers on the API socket (--socket, else the default) to stop, as SIGTERM\n"
             "does, and wait until its process has exited. Other aiosd daemons on the machine keep running.\n"
             "Block containers (the podman driver) outlive the daemon; the next `aiosd run` adopts them.\n"
             "Exits 0 when nothing was running.",
             "examples:\n  aiosd stop\n  aiosd stop --socket /tmp/n1.sock --timeout 60", cmd_stop)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the exit (default 30)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


# ----- version / config ---------------------------------------------------------------------
def cmd_version(args: argparse.Namespace, env: Env) -> int:
    info = {"version": __version__, "python": sys.version.split()[0]}
    return env.show(info, lambda i: print(f"aiosd {i['version']} (python {i['python']})"))


def register_version(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "version", "print the version", "Print the aiosd version.", "example:\n  aiosd version --json",
             cmd_version)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


def cmd_config(args: argparse.Namespace, env: Env) -> int:
    from aiosd.config import render_toml

    settings = env.settings
    return env.show(settings.model_dump(mode="json"), lambda _: sys.stdout.write(render_toml(settings)))


def register_config(sub: Sub) -> argparse.ArgumentParser:
    p = _add(sub, "config", "show the effective configuration",
             "Print the settings the daemon would use: the config file, then AIOSD_* environment variables,\n"
             "then flags (flags win). Unknown keys or bad values are reported with the key and the file.",
             "examples:\n  aiosd config\n  AIOSD_API_TCP_PORT=8470 aiosd config --json", cmd_config)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


REGISTER = [register_init, register_run, register_stop, register_status, register_version, register_config]

__all__ = ["REGISTER"]
