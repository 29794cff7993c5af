"""Container images between nodes: `podman save` archives published as assets, `podman load`ed on demand.

Records: `images/<name>` = {name, uri: "image:<name>", sha256, size, image_id, publisher, created_at};
the archive itself is the asset `image:<name>` (type "image"). This module runs the podman CLI
(asynchronously, with the runc containers.conf the runtime uses); it does not start containers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from aiosd.assets.cleanup import IMAGES
from aiosd.assets.errors import AssetError
from aiosd.assets.service import AssetsService
from federation.errors import FederationError
from runtime.images import PodmanCli, image_exists
from runtime.podman_conf import podman_env, write_containers_conf

log = logging.getLogger(__name__)

# `podman save` of a large image takes minutes; `load` likewise. One deadline for both.
PODMAN_TIMEOUT_S = 1800.0
_TAIL = 600  # characters of podman's error output kept in our error message


def image_uri(name: str) -> str:
    return f"image:{name}"


def podman_cli(assets: AssetsService) -> PodmanCli:
    conf = write_containers_conf(assets.ctx.data_dir / "podman")
    return PodmanCli(env=podman_env(conf))


async def _podman(cli: PodmanCli, *args: str) -> str:
    """Run podman; its stdout. Raises: AssetError naming the command and podman's complaint."""
    try:
        proc = await asyncio.create_subprocess_exec(
            cli.binary, *args, env=dict(cli.env) if cli.env is not None else None,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise AssetError("podman is not installed on this node (apt-get install podman runc)", 503,
                         "no_podman") from None
    try:
        async with asyncio.timeout(PODMAN_TIMEOUT_S):
            out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise AssetError(f"podman {args[0]} failed (exit {proc.returncode}): "
                         f"{err.decode(errors='replace').strip()[-_TAIL:]}", 502, "podman_failed")
    return out.decode(errors="replace")


async def push_image(assets: AssetsService, name: str) -> dict[str, Any]:
    """`podman save` local image `name` into an asset and index it. Raises: AssetError."""
    cli = podman_cli(assets)
    if not await image_exists(name, cli):
        raise AssetError(f"no local image {name!r} (see `aiosd image list`)", 404, "not_found")
    found = json.loads(await _podman(cli, "image", "inspect", "--format", '{"id": "{{.Id}}", '
                                     '"tags": {{json .RepoTags}}}', name))
    tag = next((t for t in exact_names(name) if t in (found.get("tags") or [])), None)
    if tag is None:  # podman also resolves image ids and id prefixes: never publish one of those
        raise AssetError(f"no local image is tagged exactly {name!r} (name:tag; an image id or id prefix is "
                         "not accepted; see `aiosd image list`)", 404, "not_found")
    image_id = str(found["id"])
    tmp = assets.blobs.root / "tmp" / f"save-{os.getpid()}-{time.monotonic_ns()}.tar"
    try:
        await _podman(cli, "save", "--format", "docker-archive", "-o", str(tmp), tag)
        writer = assets.writer()
        try:
            await asyncio.to_thread(_copy_into, tmp, writer)
        except BaseException:
            writer.abort()
            raise
    finally:
        tmp.unlink(missing_ok=True)
    asset = await assets.publish(image_uri(name), writer, type_="image", name=name)
    record = {"name": name, "uri": asset["uri"], "sha256": asset["sha256"], "size": asset["size"],
              "image_id": image_id, "publisher": assets.node_id, "created_at": asset["created_at"]}
    try:
        await assets.registry().put(IMAGES, name, record)
    except FederationError as e:
        raise AssetError(f"cannot publish image {name}: {e}", 403, "forbidden") from None
    log.info("image published", extra={"image": name, "sha256": asset["sha256"], "size": asset["size"]})
    return record


def exact_names(name: str) -> tuple[str, ...]:
    """The tags `name` stands for exactly: itself, with `:latest` when it has no tag, and both under
    `localhost/` when it is a short name (podman's own qualification of a locally built image)."""
    last = name.rsplit("/", 1)[-1]
    names = [name] if ":" in last or "@" in last else [name, f"{name}:latest"]
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        names += [f"localhost/{n}" for n in names]
    return tuple(names)


def _copy_into(path: Any, writer: Any) -> None:
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(writer.chunk_bytes), b""):
            writer.write(piece)


async def pull_image(assets: AssetsService, name: str) -> dict[str, Any]:
    """Fetch image `name`'s archive from peers and `podman load` it. Raises: AssetError (404: unpublished)."""
    e = await assets.registry().get(IMAGES, name)
    if e is None:
        raise AssetError(f"no image {name!r} was published to the network (`aiosd image push {name}` on a "
                         "node that has it)", 404, "not_found")
    rec = dict(e.value)
    job = await assets.fetch(str(rec["uri"]))
    cli = podman_cli(assets)
    path = assets.blobs.path(str(rec["sha256"]))
    await _podman(cli, "load", "-i", str(path))
    if not await image_exists(name, cli):
        raise AssetError(f"podman loaded the archive of {name} but no image by that name exists", 502,
                         "load_failed")
    log.info("image loaded from peers", extra={"image": name, "sha256": rec["sha256"]})
    return {"name": name, "sha256": rec["sha256"], "size": rec["size"], "loaded": True, "fetch": job.to_json()}


async def ensure_image_from_peers(assets: AssetsService, name: str) -> bool:
    """True when `name` is local (already, or fetched and loaded now); False when unpublished.

    Raises: AssetError when a published image could not be fetched or loaded.
    """
    if await image_exists(name, podman_cli(assets)):
        return True
    if await assets.registry().get(IMAGES, name) is None:
        return False
    await pull_image(assets, name)
    return True


async def list_images(assets: AssetsService) -> list[dict[str, Any]]:
    return [dict(e.value) for e in await assets.registry().scan(IMAGES)]


__all__ = ["IMAGES", "ensure_image_from_peers", "exact_names", "image_uri", "list_images", "pull_image", "push_image"]
