"""Local images without a registry: the aiosd base image (debootstrap + sdk) and block images.

`build_base` runs debootstrap once per package set (cached as `localhost/aiosd-rootfs:<hash>`),
then adds the repo's `sdk/` on top (`localhost/aiosd-base:<hash>`, also tagged `:latest`).
`build_block` builds a block directory FROM the base. Both shell out to podman asynchronously;
this module never starts containers itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import ImageBuildError, ImageNotFound

DEPS_DIR = ".aiosd-deps"  # where a block's requirements are installed inside /block
PIP_TIMEOUT_S = 600.0  # a cold install of a few wheels takes seconds; big ML wheels take minutes

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
BASE_REPO = "localhost/aiosd-base"
BASE_LATEST = f"{BASE_REPO}:latest"
ROOTFS_REPO = "localhost/aiosd-rootfs"
# Bump when the recipe changes in a way the package list does not show.
_RECIPE_VERSION = "1"
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,254}$")
_APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
_OUTPUT_TAIL = 40  # lines of a failed command's output kept in the error


@dataclass(frozen=True, slots=True)
class BaseRecipe:
    """What goes into the base image's root filesystem."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3", "python3-aiohttp", "python3-msgpack")
    mirror: str | None = None  # None: read it from the host's apt sources

    def rootfs_key(self) -> str:
        text = "\n".join([_RECIPE_VERSION, self.suite, *sorted(self.packages)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PodmanCli:
    """How to run the podman CLI: binary and environment (CONTAINERS_CONF)."""

    binary: str = "podman"
    env: Mapping[str, str] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)


def debian_mirror(paths: Iterable[Path] = _APT_SOURCES, suite: str = "bookworm") -> str:
    """The Debian mirror apt already uses for `suite` (one-line or deb822 sources).

    Raises: ImageBuildError when no source lists that suite.
    """
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(x for x in p.iterdir() if x.suffix in (".list", ".sources"))
        elif p.is_file():
            files.append(p)
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():  # one-line style: deb [opts] URL suite comps
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                rest = [x for x in parts[1:] if not x.startswith("[") and not x.endswith("]")]
                if len(rest) >= 2 and rest[1] == suite:
                    return rest[0]
        for stanza in re.split(r"\n\s*\n", text):  # deb822 style
            fields = dict(_deb822_fields(stanza))
            if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                uris = fields.get("uris", "").split()
                if uris:
                    return uris[0]
    raise ImageBuildError(f"no apt source for Debian {suite!r} in /etc/apt/sources.list(.d); pass a mirror")


def _deb822_fields(stanza: str) -> Iterable[tuple[str, str]]:
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        yield key.strip().lower(), value.strip()


def sdk_source_dir() -> Path:
    """The directory of the `sdk` package that ships into images."""
    spec = importlib.util.find_spec("sdk")
    if spec is None or not spec.submodule_search_locations:
        raise ImageBuildError("the sdk package is not importable; cannot build the base image")
    return Path(next(iter(spec.submodule_search_locations)))


def tree_hash(root: Path) -> str:
    """sha256 over the relative paths and bytes of every file under root (caches ignored)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


async def _run(cli: PodmanCli, args: list[str], *, what: str, stdin: bytes | None = None,
               progress: Progress | None = None) -> str:
    env = dict(cli.env) if cli.env is not None else None
    if cli.extra_env:
        import os
        env = {**(env or os.environ), **cli.extra_env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except FileNotFoundError:
        raise ImageBuildError(f"{what}: {args[0]!r} is not installed") from None
    lines: list[str] = []
    assert proc.stdout is not None  # PIPE was requested above
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        await proc.stdin.drain()
        proc.stdin.close()
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            del lines[:-_OUTPUT_TAIL * 10]
            log.debug("image build output", extra={"step": what, "line": line})
        rc = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if rc != 0:
        tail = "\n".join(lines[-_OUTPUT_TAIL:])
        raise ImageBuildError(f"{what} failed (exit {rc}):\n{tail}")
    return "\n".join(lines)


async def image_exists(ref: str, cli: PodmanCli = PodmanCli()) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            cli.binary, "image", "exists", ref, env=_env(cli),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    except FileNotFoundError:
        return False
    return await proc.wait() == 0


def _env(cli: PodmanCli) -> dict[str, str] | None:
    if cli.env is None and not cli.extra_env:
        return None
    import os
    return {**(cli.env or os.environ), **cli.extra_env}


async def build_rootfs(recipe: BaseRecipe, work_dir: Path, cli: PodmanCli = PodmanCli(),
                       progress: Progress | None = None) -> str:
    """Debootstrap `recipe` and import it as `localhost/aiosd-rootfs:<key>` (skipped when it exists)."""
    ref = f"{ROOTFS_REPO}:{recipe.rootfs_key()}"
    if await image_exists(ref, cli):
        _say(progress, f"rootfs {ref} is cached")
        return ref
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = recipe.mirror or debian_mirror(suite=recipe.suite)
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work_dir))
    try:
        _say(progress, f"debootstrap {recipe.suite} from {mirror} (about a minute)")
        await _run(cli, ["debootstrap", "--variant=minbase", "--include=" + ",".join(recipe.packages),
                         recipe.suite, str(tmp), mirror], what="debootstrap", progress=progress)
        await asyncio.to_thread(_slim_rootfs, tmp)
        _say(progress, f"importing rootfs as {ref}")
        await _run(cli, ["bash", "-o", "pipefail", "-c",
                         'tar -C "$1" -c . | "$2" import --change \'CMD ["/usr/bin/python3"]\' - "$3"',
                         "import", str(tmp), cli.binary, ref], what="podman import")
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    return ref


def _slim_rootfs(root: Path) -> None:
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
        for p in root.glob(pattern):
            if p.is_file():
                p.unlink()


async def build_base(work_dir: Path, *, recipe: BaseRecipe = BaseRecipe(), sdk_dir: Path | None = None,
                     cli: PodmanCli = PodmanCli(), progress: Progress | None = None) -> str:
    """Build (or reuse) `localhost/aiosd-base:<hash>`, tag it `:latest`, and return the hashed ref.

    The hash covers the package list and every file of `sdk/`, so a changed SDK rebuilds
    only the thin top layer. Raises: ImageBuildError.
    """
    sdk = sdk_dir or sdk_source_dir()
    rootfs = await build_rootfs(recipe, work_dir, cli, progress)
    key = hashlib.sha256((rootfs + await asyncio.to_thread(tree_hash, sdk)).encode()).hexdigest()[:16]
    ref = f"{BASE_REPO}:{key}"
    if not await image_exists(ref, cli):
        _say(progress, f"adding sdk to {ref}")
        ctx = Path(tempfile.mkdtemp(prefix="base-ctx-", dir=work_dir))
        try:
            await asyncio.to_thread(shutil.copytree, sdk, ctx / "sdk",
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            (ctx / "Containerfile").write_text(
                f"FROM {rootfs}\n"
                "COPY sdk /opt/aiosd/sdk\n"
                "ENV PYTHONPATH=/opt/aiosd PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n"
                "WORKDIR /block\n"
                'CMD ["python3", "block.py"]\n'
                f"LABEL aiosd.base={key}\n", encoding="utf-8")
            await _run(cli, [cli.binary, "build", "--network=none", "-t", ref, str(ctx)], what="podman build (base)")
        finally:
            await asyncio.to_thread(shutil.rmtree, ctx, True)
    else:
        _say(progress, f"base {ref} is cached")
    await _run(cli, [cli.binary, "tag", ref, BASE_LATEST], what="podman tag")
    return ref


async def build_block(block_dir: Path, tag: str, *, base: str = BASE_LATEST, cli: PodmanCli = PodmanCli(),
                      progress: Progress | None = None) -> str:
    """Build a block image from a directory holding `block.py` and, optionally, `requirements.txt`.

    Requirements are installed on the host, not in the build (which has no network: `--network=none`):
    `pip install --target` for the base image's Python version, binary wheels only, from the block's
    `wheels/` directory alone when it has one (offline), else from the configured package index. The
    packages land in `/block/.aiosd-deps`, on the instance's PYTHONPATH.
    Raises: ImageBuildError naming the file, requirement or tag that is wrong; ImageNotFound when
    `base` is missing.
    """
    if not _TAG_RE.match(tag):
        raise ImageBuildError(f"tag {tag!r} is not a valid image name (lowercase, e.g. localhost/echo:1)")
    if not (block_dir / "block.py").is_file():
        raise ImageBuildError(f"{block_dir}/block.py does not exist; a block directory needs one")
    req = block_dir / "requirements.txt"
    wanted = [ln.strip() for ln in req.read_text(encoding="utf-8").splitlines()
              if ln.strip() and not ln.strip().startswith("#")] if req.is_file() else []
    if not await image_exists(base, cli):
        raise ImageNotFound(base)
    _say(progress, f"building {tag} from {block_dir}")
    with tempfile.TemporaryDirectory(prefix="aiosd-cf-") as d:
        ctx = Path(d) / "ctx"
        await asyncio.to_thread(shutil.copytree, block_dir, ctx, ignore=shutil.ignore_patterns(DEPS_DIR))
        env_line = ""
        if wanted:
            _say(progress, f"installing {len(wanted)} requirement(s) for {tag}: {', '.join(wanted[:5])}")
            await _install_requirements(cli, base, ctx, block_dir)
            env_line = f"ENV PYTHONPATH=/block/{DEPS_DIR}\n"
        cf = Path(d) / "Containerfile"
        cf.write_text(f"FROM {base}\nCOPY . /block\n{env_line}WORKDIR /block\nCMD [\"python3\", \"block.py\"]\n",
                      encoding="utf-8")
        await _run(cli, [cli.binary, "build", "--network=none", "-f", str(cf), "-t", tag, str(ctx)],
                   what=f"podman build {tag}")
    return tag


async def _install_requirements(cli: PodmanCli, base: str, ctx: Path, block_dir: Path) -> None:
    """pip-install requirements.txt into ctx/DEPS_DIR for the base image's Python. Raises: ImageBuildError."""
    version = (await _run(cli, [cli.binary, "run", "--rm", "--network=none", base, "python3", "-c",
                                "import sys; print('%d.%d' % sys.version_info[:2])"],
                          what="python version of the base image")).strip().splitlines()[-1:]
    if not version or not re.fullmatch(r"3\.\d+", version[0]):
        raise ImageBuildError(f"cannot tell the Python version of {base} (answered {version!r})")
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "install", "--no-cache-dir",
           "--target", str(ctx / DEPS_DIR), "--python-version", version[0], "--only-binary=:all:",
           "-r", str(block_dir / "requirements.txt")]
    wheels = block_dir / "wheels"
    if wheels.is_dir():
        cmd[cmd.index("install") + 1:cmd.index("install") + 1] = ["--no-index", f"--find-links={wheels}"]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=block_dir, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(PIP_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ImageBuildError(f"installing {block_dir / 'requirements.txt'} took over {PIP_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        tail = " | ".join(out.decode(errors="replace").strip().splitlines()[-_OUTPUT_TAIL:])
        raise ImageBuildError(f"installing {block_dir / 'requirements.txt'} for Python {version[0]} failed "
                              f"(binary wheels only; a wheels/ directory beside it installs offline): {tail}")


def _say(progress: Progress | None, message: str) -> None:
    log.info("image build step", extra={"step": message})
    if progress is not None:
        progress(message)
