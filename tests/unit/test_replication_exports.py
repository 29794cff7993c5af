"""The replication package: public surface pinned, each module imports alone, sans-IO imports only."""

from __future__ import annotations

import ast
import pathlib

import federation.replication as pkg
from tests.imports import assert_each_imports_alone

PKG_DIR = pathlib.Path(pkg.__file__).parent
MODULES = sorted(p.stem for p in PKG_DIR.glob("*.py") if p.stem != "__init__")

EXPECTED_ALL = {
    "AdminOnly", "AnyMember", "Authority", "Changed", "ClockDriftError", "Draft", "Effect", "InvalidWrite",
    "LeaderOnly", "MemoryStore", "Proof", "Record", "RecordStore", "RejectReason", "ReplMessage",
    "ReplicationConfig", "ReplicationError", "ReplicationStats", "Replicator", "RootCache", "Rule", "SelfKeyed",
    "Signer", "TableDigest", "TableRules", "TableSummary", "TimerKey", "Verifier", "Version", "WireError",
    "WriteRefused", "bucket_of", "decode", "encode", "order_key", "sign_batch", "supersedes", "winner",
}  # fmt: skip


def test_public_surface_is_pinned() -> None:
    assert set(pkg.__all__) == EXPECTED_ALL
    assert all(hasattr(pkg, name) for name in pkg.__all__)


def test_every_module_imports_alone() -> None:
    assert_each_imports_alone([f"federation.replication.{m}" for m in MODULES])


def test_cores_do_no_io_and_import_downward_only() -> None:
    forbidden = {"asyncio", "time", "socket", "aiohttp", "threading", "aiosd", "runtime", "sdk"}
    for path in PKG_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not set(names) & forbidden, (path.name, names)
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
            ):
                assert node.attr == "Random", (path.name, "global random." + node.attr)
