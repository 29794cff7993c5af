"""`aiosd asset push|list|get|info` and `aiosd image push|pull|published`: blobs shared between nodes.

File bodies stream between this process and the local daemon (never held whole in memory);
the daemon does the hashing, the registry records and the peer transfers. `get` re-checks the
sha256 of what it writes before renaming it into place.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiosd.cli.common import Env, Handler, Sub, command, q
from aiosd.cli.output import print_kv, print_table
from aiosd.errors import AiosdError, ApiError, UsageError

_PIECE = 1 << 20
# Polling period of a fetch's progress (the daemon keeps it in memory; each poll is ~1 ms).
_POLL_S = 0.2
# A fetch with no progress for this long is reported as stuck (the daemon keeps trying).
_STALL_S = 600.0
_LONG_S = 1800.0  # image push/pull: podman save/load of a large image


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _add(sub: Sub, name: str, help_: str, description: str, epilog: str, handler: Handler) -> argparse.ArgumentParser:
    return command(sub, name, help_, description, epilog, handler, json_help=None)


class _Progress:
    """One self-rewriting stderr line, only on a TTY."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled, self.t0 = label, enabled and sys.stderr.isatty(), time.monotonic()

    def show(self, done: int, total: int, extra: str = "") -> None:
        if not self.enabled:
            return
        rate = done / max(time.monotonic() - self.t0, 1e-6)
        pct = f" ({100 * done // total}%)" if total else ""
        sys.stderr.write(f"\r  {self.label}: {_mib(done)}/{_mib(total)}{pct} {_mib(rate)}/s {extra}\x1b[K")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# ----- asset push ---------------------------------------------------------------------------
def _push(env: Env, path: Path, query: dict[str, str], show: bool) -> Any:
    size = path.stat().st_size
    bar = _Progress(f"pushing {path.name}", show)

    def body() -> Iterator[bytes]:
        sent = 0
        with path.open("rb") as f:
            while piece := f.read(_PIECE):
                sent += len(piece)
                bar.show(sent, size)
                yield piece

    try:
        return _send(env, "/v1/assets?" + urllib.parse.urlencode(query), body(), size)
    finally:
        bar.end()


def _send(env: Env, path: str, body: Iterator[bytes], size: int) -> Any:
    import json

    resp = env.api(timeout_s=None).open("POST", path, body, content_type="application/octet-stream", length=size)
    try:
        return json.loads(resp.read())
    finally:
        resp.close()


def cmd_push(args: argparse.Namespace, env: Env) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{args.file}: no such file")
    query = {"uri": args.uri or path.name, "type": args.type, "name": path.name}
    if args.chunk_bytes:
        query["chunk_bytes"] = str(args.chunk_bytes)
    rec = _push(env, path, query, not env.json)
    return env.show(rec, lambda r: print(f"pushed {r['uri']}: sha256:{r['sha256']} ({_mib(r['size'])}, "
                                         f"{r['chunks']} chunks)"))


# ----- asset list / info --------------------------------------------------------------------
def cmd_list(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get("/v1/assets")["items"], lambda items: print_table(
        ["uri", "type", "size", "sha256", "holders", "local"],
        [[i["uri"], i.get("type", ""), _mib(i.get("size", 0)), str(i.get("sha256", ""))[:12],
          len(i.get("holders", [])), "yes" if i.get("local") else "no"] for i in items]))


def cmd_info(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get(f"/v1/assets/info?uri={q(args.uri)}"), lambda rec: print_kv([
        ("uri", rec["uri"]), ("type", rec.get("type")), ("sha256", rec["sha256"]),
        ("size", f"{rec['size']} bytes"), ("chunks", f"{rec['chunks']} x {rec['chunk_bytes']} bytes"),
        ("holders", ", ".join(rec.get("holders", []))), ("local", "yes" if rec.get("local") else "no")]))


# ----- asset get ----------------------------------------------------------------------------
def _wait_fetch(env: Env, uri: str, show: bool) -> dict[str, Any]:
    """Start (or join) the daemon's fetch of `uri` and follow it to the end. Raises: AiosdError."""
    api = env.api(timeout_s=30)
    job: dict[str, Any] = api.post("/v1/assets/fetch", {"uri": uri})
    bar = _Progress(f"fetching {uri}", show)
    last, moved = -1, time.monotonic()
    try:
        while job["state"] == "running":
            bar.show(job["bytes_done"], job["size"], f"from {len(job['per_holder'])} holder(s)")
            if job["bytes_done"] != last:
                last, moved = job["bytes_done"], time.monotonic()
            elif time.monotonic() - moved > _STALL_S:
                raise AiosdError(f"fetching {uri} made no progress for {_STALL_S:.0f}s")
            time.sleep(_POLL_S)
            job = api.get(f"/v1/assets/fetches/{job['sha256']}")
        if job["state"] == "done":
            bar.show(job["size"], job["size"], f"from {len(job['per_holder'])} holder(s)")
    finally:
        bar.end()
    if job["state"] != "done":
        raise AiosdError(f"fetching {uri} failed: {job.get('error')}")
    return job


def _download(env: Env, sha256: str, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.part-{os.getpid()}")
    h = hashlib.sha256()
    try:
        resp = env.api(timeout_s=60).open("GET", f"/v1/blobs/{sha256}")
        try:
            with tmp.open("wb") as f:
                while piece := resp.read(_PIECE):
                    h.update(piece)
                    f.write(piece)
        finally:
            resp.close()
        if h.hexdigest() != sha256:
            raise AiosdError(f"the downloaded file hashes to {h.hexdigest()}, not {sha256}; nothing written")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_get(args: argparse.Namespace, env: Env) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"-o {args.output}: is a directory; give a file path")
    if not out.parent.is_dir():
        raise UsageError(f"-o {args.output}: directory {out.parent} does not exist")

    job = _wait_fetch(env, args.uri, not env.json)
    _download(env, job["sha256"], out)
    src = ", ".join(f"{n}: {c}" for n, c in job["per_holder"].items()) or "already on this node"
    return env.show({**job, "path": str(out)},
                    lambda _: print(f"wrote {out} ({_mib(job['size'])}, sha256 verified; chunks from {src})"))


# ----- image push / pull / published ---------------------------------------------------------
def cmd_image_push(args: argparse.Namespace, env: Env) -> int:
    rec = env.call("POST", "/v1/images/push", {"name": args.name}, timeout_s=_LONG_S)
    return env.show(rec, lambda r: print(f"published image {r['name']} as {r['uri']} "
                                         f"(sha256:{r['sha256'][:12]}, {_mib(r['size'])})"))


def cmd_image_pull(args: argparse.Namespace, env: Env) -> int:
    try:
        _wait_fetch(env, f"image:{args.name}", not env.json)
    except ApiError as e:
        if e.status != 404:
            raise
        raise AiosdError(f"no image {args.name!r} was published to the network (`aiosd image push "
                         f"{args.name}` on a node that has it; see `aiosd image published`)") from None
    rec = env.call("POST", "/v1/images/pull", {"name": args.name}, timeout_s=_LONG_S)
    return env.show(rec, lambda r: print(f"image {r['name']} loaded (sha256:{r['sha256'][:12]}, "
                                         f"{_mib(r['size'])})"))


def cmd_image_published(args: argparse.Namespace, env: Env) -> int:
    return env.show(env.get("/v1/images")["items"], lambda items: print_table(
        ["name", "size", "sha256", "publisher"],
        [[i["name"], _mib(i["size"]), i["sha256"][:12], i["publisher"]] for i in items]))


def register_image_dist(isub: Sub) -> list[argparse.ArgumentParser]:
    """Add `push`, `pull` and `published` to the `aiosd image` parser (image_cmds owns it)."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = isub.add_parser("push", help="make a local image available to the network",
                        description="podman save NAME into a content-addressed asset (image:NAME) and publish an\n"
                                    "images record; other nodes fetch it from here. Needs the admin role.",
                        epilog="example:\n  aiosd image push localhost/aiosd-echo:latest", formatter_class=fmt)
    p.add_argument("name", help="local image name (see `aiosd image list`)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(handler=cmd_image_push)
    q = isub.add_parser("pull", help="fetch a published image from peers and podman load it",
                        description="Fetch image:NAME from the nodes that hold it (chunked, verified, several\n"
                                    "peers in parallel) and podman load it here.",
                        epilog="example:\n  aiosd image pull localhost/aiosd-echo:latest", formatter_class=fmt)
    q.add_argument("name", help="published image name (see `aiosd image published`)")
    q.add_argument("--json", action="store_true", help="print the result as JSON (no progress line)")
    q.set_defaults(handler=cmd_image_pull)
    r = isub.add_parser("published", help="list images published to the network",
                        description="List the images table: images any node can pull.",
                        epilog="example:\n  aiosd image published --json", formatter_class=fmt)
    r.add_argument("--json", action="store_true", help="print as JSON")
    r.set_defaults(handler=cmd_image_published)
    return [p, q, r]


def register_asset(sub: Sub) -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p: argparse.ArgumentParser = sub.add_parser(
        "asset", help="share files between nodes (content-addressed, verified)",
        description="Assets are files stored by sha256 and indexed in the replicated registry. A node that\n"
                    "needs one fetches it in chunks from every peer that holds it, checking each chunk.",
        epilog="examples:\n  aiosd asset push model.bin --uri models/tiny:1\n  aiosd asset list\n"
               "  aiosd asset get models/tiny:1 -o /tmp/model.bin", formatter_class=fmt)
    asub = p.add_subparsers(dest="asset_command", metavar="ACTION", required=True)
    pu = _add(asub, "push", "publish a file as an asset",
              "Store FILE by its sha256 and publish it under URI (default: the file name). Needs the admin role.",
              "examples:\n  aiosd asset push weights.bin --uri models/tiny:1\n  aiosd asset push data.csv --json",
              cmd_push)
    pu.add_argument("file", help="file to publish")
    pu.add_argument("--uri", help="asset URI, e.g. models/tiny:1 (default: the file name)")
    pu.add_argument("--type", default="file", choices=["file", "model", "data", "policy"],
                    help="asset type (default file)")
    pu.add_argument("--chunk-bytes", type=int, help="transfer chunk size (default: settings assets.chunk_bytes)")
    pu.add_argument("--json", action="store_true", help="print the record as JSON (no progress line)")
    ls = _add(asub, "list", "list assets, their holders and whether this node has each",
              "List the assets table with the nodes that hold each blob.", "example:\n  aiosd asset list --json",
              cmd_list)
    ls.add_argument("--json", action="store_true", help="print as JSON")
    inf = _add(asub, "info", "show one asset", "Show one asset record and its holders.",
               "example:\n  aiosd asset info models/tiny:1", cmd_info)
    inf.add_argument("uri", help="asset URI")
    inf.add_argument("--json", action="store_true", help="print as JSON")
    g = _add(asub, "get", "fetch an asset from its holders and write it to a file",
             "Fetch URI into this node's blob store (from every peer that holds it, in parallel, each chunk\n"
             "verified; an interrupted fetch resumes), then write it to PATH. Progress shows on a terminal.",
             "examples:\n  aiosd asset get models/tiny:1 -o /tmp/model.bin\n"
             "  aiosd asset get image:localhost/bb:1 -o bb.tar --json", cmd_get)
    g.add_argument("uri", help="asset URI (see `aiosd asset list`)")
    g.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    g.add_argument("--json", action="store_true", help="print the result as JSON (no progress line)")
    return p


REGISTER = [register_asset]

__all__ = ["REGISTER", "register_image_dist"]
