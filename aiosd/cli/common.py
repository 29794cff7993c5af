"""What every CLI command module shares: the common options."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="TOML config file (default: /etc/aiosd/aiosd.toml if present)")
    g.add_argument("--data-dir", metavar="DIR", help="node data dir (default: /var/lib/aiosd as root, "
                   "else $XDG_DATA_HOME/aiosd)")
    g.add_argument("--socket", metavar="PATH", help="local API socket (default: /run/aiosd/aiosd.sock as root, "
                   "else $XDG_RUNTIME_DIR/aiosd.sock)")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="daemon log level")
    g.add_argument("--log-format", choices=["text", "json"], help="daemon log format")


__all__ = ["add_common"]
