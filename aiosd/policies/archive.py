"""Policy archives: pack a directory, read a zip/tar safely, extract it, read its manifest.

An archive holds `code/function.py` (class `AIOSv1PolicyRule`), optional `code/requirements.txt`,
optional wheels (`*.whl` anywhere under `code/`), and an optional `policy.json` manifest (schemas,
defaults, tags). Reading never trusts names: no absolute paths, no `..`, no links or devices,
bounded size and member count. Storing and signing are `aiosd.policies.store`'s.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from aiosd.policies.errors import PolicyArchiveError

FUNCTION = "code/function.py"
REQUIREMENTS = "code/requirements.txt"
MANIFEST = "policy.json"
# Why 64 MiB: code plus a few wheels; bigger payloads (models) are assets, not policies.
MAX_ARCHIVE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 128 << 20
# Why 2,000: a policy with its wheels is tens of files; more is an accident or a zip bomb.
MAX_MEMBERS = 2000
MAX_MANIFEST_BYTES = 256 << 10
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"})


@dataclass(frozen=True, slots=True)
class ArchiveContents:
    """The files of an archive, by normalised relative path (`code/function.py`, ...)."""

    files: Mapping[str, bytes]

    @property
    def requirements(self) -> list[str]:
        """Requirement lines (comments and blanks dropped)."""
        raw = self.files.get(REQUIREMENTS, b"").decode("utf-8", errors="replace")
        return [ln.strip() for ln in raw.splitlines() if ln.strip() and not ln.strip().startswith("#")]

    @property
    def wheels(self) -> list[str]:
        return sorted(p for p in self.files if p.startswith("code/") and p.endswith(".whl"))

    def manifest(self) -> dict[str, Any]:
        """The `policy.json` manifest, or {} when absent.

        Raises:
            PolicyArchiveError: not a JSON object.
        """
        raw = self.files.get(MANIFEST)
        if raw is None:
            return {}
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise PolicyArchiveError(MANIFEST, f"is not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise PolicyArchiveError(MANIFEST, "must be a JSON object")
        return doc


def pack_dir(src: Path) -> bytes:
    """A deterministic tar.gz of a policy directory (same files = same bytes = same hash).

    `src` holds `code/function.py` (+ `policy.json`), or is itself the code directory
    (holding `function.py`). Raises: PolicyArchiveError naming what is missing.
    """
    src = Path(src)
    if (src / FUNCTION).is_file():
        base, prefix = src, ""
    elif (src / "function.py").is_file():
        base, prefix = src, "code/"
    else:
        raise PolicyArchiveError(str(src), "is not a policy directory: expected code/function.py "
                                 "(or function.py) inside it")
    files: dict[str, bytes] = {}
    total = 0
    for root, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = prefix + path.relative_to(base).as_posix()
            if prefix and rel == "code/" + MANIFEST:
                rel = MANIFEST  # a manifest beside function.py describes the archive
            data = path.read_bytes()
            total += len(data)
            if total > MAX_UNPACKED_BYTES or len(files) >= MAX_MEMBERS:
                raise PolicyArchiveError(str(src), f"is too big for a policy (max {MAX_UNPACKED_BYTES >> 20} MiB, "
                                         f"{MAX_MEMBERS} files)")
            files[rel] = data
    return pack_files(files)


def pack_files(files: Mapping[str, bytes]) -> bytes:
    """A deterministic tar.gz of `files` (mtime 0, root owner, 0644)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def read_archive(data: bytes) -> ArchiveContents:
    """Validate and read a zip or tar (plain, gz, bz2, xz) policy archive.

    One wrapping directory is tolerated (`mypolicy/code/function.py`).
    Raises: PolicyArchiveError naming the member or the rule broken.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise PolicyArchiveError("archive", f"is {len(data)} bytes; the limit is {MAX_ARCHIVE_BYTES}")
    if data[:4] == b"PK\x03\x04":
        raw = _read_zip(data)
    else:
        raw = _read_tar(data)
    files = _unwrap(raw)
    if FUNCTION not in files:
        listed = ", ".join(sorted(files)[:10]) or "nothing"
        raise PolicyArchiveError("archive", f"has no {FUNCTION} (it holds: {listed})")
    return ArchiveContents(files)


def _read_zip(data: bytes) -> dict[str, bytes]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise PolicyArchiveError("archive", f"is not a readable zip ({e})") from None
    out: dict[str, bytes] = {}
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise PolicyArchiveError("archive", f"has {len(infos)} members; the limit is {MAX_MEMBERS}")
        for info in infos:
            if info.is_dir():
                continue
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode != 0o100000:
                raise PolicyArchiveError(info.filename[:200], "is a link or special file; only regular files")
            name = _safe_name(info.filename)
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise PolicyArchiveError("archive", f"unpacks to more than {MAX_UNPACKED_BYTES} bytes")
            try:
                out[name] = zf.read(info)
            except (zipfile.BadZipFile, OSError, RuntimeError) as e:
                raise PolicyArchiveError(name, f"cannot be read ({e})") from None
    return out


def _read_tar(data: bytes) -> dict[str, bytes]:
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115  # closed by the `with tf` below
    except (tarfile.TarError, EOFError, OSError) as e:
        raise PolicyArchiveError("archive", f"is neither a zip nor a tar archive ({e})") from None
    out: dict[str, bytes] = {}
    total = 0
    count = 0
    with tf:
        try:
            for m in tf:
                count += 1
                if count > MAX_MEMBERS:
                    raise PolicyArchiveError("archive", f"has more than {MAX_MEMBERS} members")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise PolicyArchiveError(m.name[:200], "is a link or special file; only regular files")
                name = _safe_name(m.name)
                total += m.size
                if total > MAX_UNPACKED_BYTES:
                    raise PolicyArchiveError("archive", f"unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                member = tf.extractfile(m)
                out[name] = member.read() if member is not None else b""
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise PolicyArchiveError("archive", f"is damaged ({e})") from None
    return out


def _safe_name(name: str) -> str:
    p = PurePosixPath(name.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".")]
    if p.is_absolute() or not parts or ".." in parts or len(name) > 512:
        raise PolicyArchiveError(name[:200], "is not a safe relative path (absolute, '..' or too long)")
    return "/".join(parts)


def _unwrap(files: dict[str, bytes]) -> dict[str, bytes]:
    if FUNCTION in files:
        return files
    tops = {n.split("/", 1)[0] for n in files}
    if len(tops) == 1:
        top = next(iter(tops)) + "/"
        inner = {n[len(top):]: v for n, v in files.items() if n.startswith(top) and n != top}
        if FUNCTION in inner:
            return inner
    if "function.py" in files:  # a bare code directory packed without its `code/` parent
        return {(n if n == MANIFEST else "code/" + n): v for n, v in files.items()}
    return files


def extract(contents: ArchiveContents, dest: Path, *, mode: int = 0o755) -> None:
    """Write the files under `dest` (directories `mode`, files 0644: readable by the sandbox user)."""
    dest.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(dest, mode)
    for name, data in contents.files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=mode)
        target.write_bytes(data)
        os.chmod(target, 0o644)
    for root, dirs, _ in os.walk(dest):
        for d in dirs:
            os.chmod(Path(root) / d, mode)


__all__ = [
    "FUNCTION",
    "MANIFEST",
    "MAX_ARCHIVE_BYTES",
    "REQUIREMENTS",
    "ArchiveContents",
    "extract",
    "pack_dir",
    "pack_files",
    "read_archive",
]
