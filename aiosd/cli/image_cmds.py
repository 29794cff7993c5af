"""`aiosd image build-base | build | list`: local images with no registry.

Image builds are a local administration step like `init`: they run podman on this machine
directly (root, the runc + ulimits containers.conf that the podman driver uses), printing
progress; the daemon only runs what exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from aiosd.cli.common import add_common
from aiosd.cli.output import print_json, print_table
from aiosd.config import Settings
from aiosd.errors import AiosdError
from runtime.errors import AiosdRuntimeError
from runtime.images import BASE_LATEST, PodmanCli, build_base, build_block
from runtime.podman_conf import podman_env, write_containers_conf

Sub = Any


def _cli(settings: Settings) -> PodmanCli:
    conf = write_containers_conf(settings.data_dir / "podman")
    return PodmanCli(env=podman_env(conf))


def _progress(quiet: bool) -> Any:
    return None if quiet else (lambda msg: print(f"  {msg}", flush=True))


def cmd_build_base(args: argparse.Namespace, settings: Settings) -> int:
    work = settings.data_dir / "images"
    work.mkdir(parents=True, exist_ok=True)
    try:
        ref = asyncio.run(build_base(work, cli=_cli(settings), progress=_progress(args.json)))
    except AiosdRuntimeError as e:
        raise AiosdError(str(e)) from None
    if args.json:
        print_json({"image": ref, "latest": BASE_LATEST})
    else:
        print(f"base image ready: {ref} (also {BASE_LATEST})")
    return 0


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    block_dir = Path(args.dir)
    try:
        tag = asyncio.run(build_block(block_dir, args.tag, base=args.base, cli=_cli(settings),
                                      progress=_progress(args.json)))
    except AiosdRuntimeError as e:
        raise AiosdError(str(e)) from None
    if args.json:
        print_json({"image": tag})
    else:
        print(f"block image ready: {tag}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    cli = _cli(settings)
    try:
        out = subprocess.run([cli.binary, "images", "--format", "json"], capture_output=True, text=True,
                             env=dict(cli.env or {}), timeout=60, check=False)
    except FileNotFoundError:
        raise AiosdError("podman is not installed; install podman and runc to build and run block images") from None
    if out.returncode != 0:
        raise AiosdError(f"podman images failed: {out.stderr.strip()[:300]}")
    seen: set[str] = set()
    rows = []
    for image in json.loads(out.stdout or "[]"):
        for name in image.get("Names") or ["<none>"]:
            if name in seen or not (args.all or name.startswith("localhost/")):
                continue
            seen.add(name)
            rows.append({"name": name, "id": image.get("Id", "")[:12],
                         "size_mb": round(image.get("Size", 0) / 2**20, 1)})
    if args.json:
        print_json(rows)
    else:
        print_table(["name", "id", "size_mb"], [[r["name"], r["id"], r["size_mb"]] for r in rows])
    return 0


def register_image(sub: Sub) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "image", help="build local block images (no registry needed)",
        description="Build the aiosd base image (Debian + Python + the block SDK, via debootstrap) and block\n"
                    "images from a directory holding block.py. Needs root and podman.",
        epilog="examples:\n  aiosd image build-base\n  aiosd image build examples/echo -t localhost/aiosd-echo:latest\n"
               "  aiosd image list --json\n  aiosd image push localhost/aiosd-echo:latest\n"
               "  aiosd image pull localhost/aiosd-echo:latest",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    b = isub.add_parser("build-base", help="build (or reuse) localhost/aiosd-base:latest",
                        description="debootstrap a minimal Debian with python3, aiohttp and msgpack once (cached by\n"
                                    "package list), then add this aiosd's sdk/ on top.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  aiosd image build-base --json")
    b.add_argument("--json", action="store_true", help="print the result as JSON (no progress lines)")
    b.set_defaults(handler=cmd_build_base)
    k = isub.add_parser("build", help="build a block image from a directory",
                        description="Build DIR (block.py + optional requirements.txt, with wheels/ to install offline) FROM "
                                    "the base image; requirements are installed on the host for the image's Python.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  aiosd image build examples/echo -t localhost/aiosd-echo:latest")
    k.add_argument("dir", help="block directory holding block.py")
    k.add_argument("-t", "--tag", required=True, help="image name, e.g. localhost/my-block:1")
    k.add_argument("--base", default=BASE_LATEST, help=f"base image (default {BASE_LATEST})")
    k.add_argument("--json", action="store_true", help="print the result as JSON")
    k.set_defaults(handler=cmd_build)
    ls = isub.add_parser("list", help="list local images", description="List localhost/ images (--all: every image).",
                         epilog="example:\n  aiosd image list", formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--all", action="store_true", help="include images from registries")
    ls.add_argument("--json", action="store_true", help="print as JSON")
    ls.set_defaults(handler=cmd_list)
    from aiosd.cli.asset_cmds import register_image_dist

    for q in (b, k, ls, *register_image_dist(isub)):
        _common_opts(q)
    return p


def _common_opts(p: argparse.ArgumentParser) -> None:

    add_common(p)


REGISTER = [register_image]

__all__ = ["REGISTER"]
