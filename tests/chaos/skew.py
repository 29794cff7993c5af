"""Version skew: the source tree of an older, pinned commit of main, for one node of a ChaosNet.

`old_tree()` extracts the pinned commit (`git archive`, so the repository gets no extra
worktree to clean up) into /tmp/aiosd-chaos-old-<commit>, once per machine; the daemon and its
`aiosd join` then run from it (cwd and PYTHONPATH, see ChaosNet's `code`), with this checkout's
virtual environment (the pinned commit has the same dependencies).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# 2026-11-27 06:06: "Any node of a cluster answers inference for a cluster block" (blk.task v1,
# before the cross-cluster relay field, the WebSocket split and the published allocators).
PINNED = "683c9fcff4bb0dda42cfbb2e8097d4988deb37dd"


def old_tree(commit: str = PINNED) -> Path | str:
    """The extracted tree, or why it cannot be had (no git, commit not in this repository)."""
    dest = Path(f"/tmp/aiosd-chaos-old-{commit[:12]}")
    if (dest / "aiosd" / "cli").is_dir():
        return dest
    if shutil.which("git") is None:
        return "git is not installed"
    have = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True,
                          timeout=30, check=False)
    if have.returncode != 0:
        return f"commit {commit[:12]} is not in {ROOT}"
    tmp = Path(tempfile.mkdtemp(prefix="aiosd-chaos-old-", dir="/tmp"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, timeout=60, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, timeout=60, check=True)
    try:
        tmp.rename(dest)
    except OSError:  # another run extracted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


__all__ = ["PINNED", "old_tree"]
