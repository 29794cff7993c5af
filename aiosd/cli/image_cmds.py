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
from typing import TYPE_CHECKING, Any

from aiosd.cli.common import Env, Sub
from aiosd.cli.output import print_json, print_table
from aiosd.errors import AiosdError

if TYPE_CHECKING:
    from runtime.images import PodmanCli

BASE_LATEST = "localhost/aiosd-base:latest"  # runtime.images.BASE_LATEST (a unit test keeps them equal)


def _cli(env: Env) -> PodmanCli:
    from runtime.images import PodmanCli
    from runtime.podman_conf import podman_env, write_containers_conf

    conf = write_containers_conf(env.data_dir / "podman")
    return PodmanCli(env=podman_env(conf))


def _progress(quiet: bool) -> Any:
    return None if quiet else (lambda msg: print(f"  {msg}", flush=True))


def cmd_build_base(args: argparse.Namespace, env: Env) -> int:
    from runtime.errors import AiosdRuntimeError
    from runtime.images import build_base

    work = env.data_dir / "images"
    work.mkdir(parents=True, exist_ok=True)
    try:
        ref = asyncio.run(build_base(work, cli=_cli(env), progress=_progress(args.json)))
    except AiosdRuntimeError as e:
        raise AiosdError(str(e)) from None
    if args.json:
        print_json({"image": ref, "latest": BASE_LATEST})
    else:
        print(f"base image ready: {ref} (also {BASE_LATEST})")
    return 0


def cmd_build(args: argparse.Namespace, env: Env) -> int:
    from runtime.errors import AiosdRuntimeError
    from runtime.images import build_block

    block_dir = Path(args.dir)
    try:
        tag = asyncio.run(build_block(block_dir, args.tag, base=args.base, cli=_cli(env),
                                      progress=_progress(args.json)))
    except AiosdRuntimeError as e:
        raise AiosdError(str(e)) from None
    if args.json:
        print_json({"image": tag})
    else:
        print(f"block image ready: {tag}")
    return 0


def cmd_list(args: argparse.Namespace, env: Env) -> int:
    cli = _cli(env)
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
        "image", help="build and share block images (no registry needed)",
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

    register_image_dist(isub)
    return p


REGISTER = [register_image]

__all__ = ["REGISTER"]
