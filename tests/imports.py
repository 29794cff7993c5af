"""Each module imports alone: one interpreter, our packages purged from sys.modules before each
import (so no module relies on another having been imported first), third-party modules kept
(importing aiohttp or torch once, not once per module, keeps this a second instead of twenty)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
OURS = ("aiosd", "federation", "storage", "runtime", "sdk")


def assert_each_imports_alone(modules: list[str], *, timeout_s: float = 300) -> None:
    assert modules, "no modules to import"
    script = (
        "import importlib, sys\n"
        f"ours = {OURS!r}\n"
        "bad = []\n"
        f"for name in {modules!r}:\n"
        "    for k in [k for k in sys.modules if k.split('.')[0] in ours]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        bad.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
