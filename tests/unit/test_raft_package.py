"""The consensus package: every module imports alone, layering holds, and the public surface is pinned."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from federation import consensus

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "federation" / "consensus"
MODULES = sorted(f"federation.consensus.{p.stem}" for p in PKG.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True, timeout=60)


def test_consensus_imports_only_downward() -> None:
    ours = {"aiosd", "federation", "runtime", "storage", "sdk", "tests"}
    for path in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in ours or top in {"federation", "storage"}, f"{path.name} imports {name}"
                assert not name.startswith("federation.") or name.startswith(
                    ("federation.consensus", "federation.sansio", "federation.errors", "federation.strict")
                ), f"{path.name} imports {name}"
                # driver.py is the one asyncio driver (STYLE §4); the core modules stay sans-IO.
                if path.name != "driver.py":
                    assert top not in {"asyncio", "time", "socket"}, f"{path.name} does IO or reads the clock"


def test_public_surface_is_pinned() -> None:
    assert sorted(consensus.__all__) == [
        "AnyRaftMessage",
        "AppendEntries",
        "AppendResponse",
        "Busy",
        "ChangeInProgress",
        "Committed",
        "ConfigLog",
        "ConsensusError",
        "Effect",
        "Entry",
        "EntryType",
        "HardState",
        "InMemoryRaftStorage",
        "InstallSnapshot",
        "LmdbRaftStorage",
        "MemberConfig",
        "MembershipChanged",
        "NoQuorum",
        "NotLeader",
        "ProposeError",
        "Raft",
        "RaftConfig",
        "RaftDecodeError",
        "RaftStats",
        "RaftStatus",
        "RaftStorage",
        "Role",
        "RoleChanged",
        "Snapshot",
        "SnapshotResponse",
        "StateMachine",
        "StorageCorrupt",
        "TimerKey",
        "TooLarge",
        "VoteRequest",
        "VoteResponse",
        "bootstrap",
        "decode",
        "encode",
        "plan_change",
    ]
    for name in consensus.__all__:
        assert getattr(consensus, name) is not None
