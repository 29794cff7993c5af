"""Unpacked policy code and per-policy virtualenvs, keyed by the archive's sha256.

`<root>/code/<sha>/` holds the extracted archive; `<root>/venvs/<sha>/` a venv with the
archive's requirements (offline with `--no-index --find-links` when the archive carries wheels,
else from the configured index). Both are caches: deleting them costs a reinstall, nothing more.
A `.ready` marker is written last, so a half-built entry is rebuilt, never used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from aiosd.policies.archive import ArchiveContents, extract
from aiosd.policies.errors import PolicyLoadError

log = logging.getLogger(__name__)

READY = ".ready"
# Why 300 s: a cold pip install of a few pure-Python packages from an index takes seconds; big
# binary wheels take minutes. Past this the install is killed and reported.
INSTALL_TIMEOUT_S = 300.0
PIP_OUTPUT_TAIL = 1500


@dataclass(frozen=True, slots=True)
class PreparedCode:
    code_dir: Path  # holds function.py
    python: str  # the interpreter to run it with


class Installer:
    """Extracts archives and builds venvs, at most one build per archive at a time."""

    def __init__(self, root: Path, base_python: str, *, install_timeout_s: float = INSTALL_TIMEOUT_S) -> None:
        self.root = root
        self.base_python = base_python
        self.install_timeout_s = install_timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def prepare(self, sha: str, uri: str, contents: ArchiveContents) -> PreparedCode:
        """Code dir + interpreter for this archive, building what is missing.

        Raises:
            PolicyLoadError: the venv or the pip install failed (pip's output tail included).
        """
        lock = self._locks.setdefault(sha, asyncio.Lock())
        async with lock:
            top = self.root / "code" / sha
            if not (top / READY).exists():
                await asyncio.to_thread(_extract_fresh, contents, top)
            code_dir = top / "code"
            if not contents.requirements:
                return PreparedCode(code_dir, self.base_python)
            venv = self.root / "venvs" / sha
            if not (venv / READY).exists():
                await self._build_venv(venv, top, contents, uri)
            return PreparedCode(code_dir, str(venv / "bin" / "python"))

    async def _build_venv(self, venv: Path, top: Path, contents: ArchiveContents, uri: str) -> None:
        await asyncio.to_thread(shutil.rmtree, venv, True)
        log.info("policy venv build started", extra={"policy": uri, "venv": str(venv)})
        await self._run(uri, [self.base_python, "-m", "venv", "--without-pip", str(venv)], "venv")
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input",
               "--python", str(venv / "bin" / "python"), "install", "--no-cache-dir",
               "-r", str(top / "code" / "requirements.txt")]
        if contents.wheels:
            dirs = sorted({str((top / w).parent) for w in contents.wheels})
            cmd[cmd.index("install") + 1:cmd.index("install") + 1] = ["--no-index"] + [
                f"--find-links={d}" for d in dirs]
        await self._run(uri, cmd, "pip install")
        await asyncio.to_thread(_finish_venv, venv)
        log.info("policy venv ready", extra={"policy": uri, "venv": str(venv)})

    async def _run(self, uri: str, cmd: list[str], what: str) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": str(self.root)}
        for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
            if k in os.environ:
                env[k] = os.environ[k]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, env=env,
                                                    start_new_session=True)
        try:
            async with asyncio.timeout(self.install_timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise PolicyLoadError(uri, f"{what} took over {self.install_timeout_s:g} s and was stopped") from None
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            tail = out.decode("utf-8", errors="replace").strip()[-PIP_OUTPUT_TAIL:]
            raise PolicyLoadError(uri, f"{what} failed (exit {proc.returncode}): {tail}")


def _extract_fresh(contents: ArchiveContents, top: Path) -> None:
    shutil.rmtree(top, ignore_errors=True)
    extract(contents, top)
    (top / READY).touch()


def _finish_venv(venv: Path) -> None:
    # Readable and traversable by the sandbox user; written only by the daemon.
    for root, dirs, files in os.walk(venv):
        for d in dirs:
            os.chmod(Path(root) / d, 0o755)
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)
    os.chmod(venv, 0o755)
    (venv / READY).touch()


__all__ = ["INSTALL_TIMEOUT_S", "Installer", "PreparedCode"]
