"""Package hygiene: every module imports, imports go downward only, `__all__` is honest."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["storage", "federation", "runtime", "sdk", "aiosd"]
ALLOWED = {
    "aiosd": {"federation", "runtime", "storage", "sdk"},
    "federation": {"storage"},
    "runtime": {"storage", "sdk"},
    "storage": set(),
    "sdk": set(),
}


def all_modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        names.append(pkg)
        for info in pkgutil.walk_packages([str(ROOT / pkg)], prefix=pkg + "."):
            if not info.name.split(".")[-1].startswith("__"):
                names.append(info.name)
    return sorted(names)


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    # One interpreter per top-level package: an import cycle inside a package shows up here.
    for pkg in PACKAGES:
        mods = [m for m in all_modules() if m.split(".")[0] == pkg]
        code = f"import importlib\nfor m in {list(reversed(mods))!r}:\n    importlib.import_module(m)\n"
        r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{pkg}: {r.stderr[-2000:]}"


def test_imports_go_downward_only() -> None:
    import ast

    broken = []
    for pkg, allowed in ALLOWED.items():
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module.split(".")[0]]
                for name in names:
                    if name in ALLOWED and name != pkg and name not in allowed:
                        broken.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}: {pkg} imports {name}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_public_names_exist(pkg: str) -> None:
    mod = importlib.import_module(pkg)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{pkg}.__all__ names {name!r}, which does not exist"


def test_shared_layer_checker_agrees() -> None:
    tool = ROOT.parent / "shared" / "tools" / "layers.py"
    if not tool.exists():
        pytest.skip("../shared/tools/layers.py is not beside this checkout")
    r = subprocess.run([sys.executable, str(tool), str(ROOT)], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout
