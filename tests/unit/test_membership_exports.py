"""federation.membership: pinned public surface, each module imports alone, imports go downward."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

from federation import membership

PKG = pathlib.Path(membership.__file__).parent
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")


def test_all_is_pinned() -> None:
    assert sorted(membership.__all__) == sorted(
        [
            "SWIM_ADAPTER", "SWIM_KINDS", "Ack", "Alive", "Awareness", "Dead", "Effect", "Gossip",
            "GossipTick", "JoinTick", "Member", "MemberChanged", "MemberRecord", "MemberState", "Nack",
            "Ping", "PingReq", "ProbeTick", "ProbeTimeout", "ReconnectTick", "RelayTimeout", "SendAddr",
            "Suspect", "Suspicion", "SuspicionTimeout", "Swim", "SwimConfig", "SwimCounters", "SwimMsg",
            "Sync", "SyncReply", "SyncTick", "TimerKey", "decode", "encode", "push_pull_interval_s",
            "remaining_suspicion_s", "retransmit_limit", "suspicion_max_timeout_s", "suspicion_timeout_s",
            "validate",
        ]
    )  # fmt: skip
    for name in membership.__all__:
        assert hasattr(membership, name), name


def test_wire_kinds_are_pinned() -> None:
    assert sorted(membership.SWIM_KINDS) == [
        "swim.ack", "swim.gossip", "swim.nack", "swim.ping", "swim.ping_req", "swim.sync", "swim.sync_reply",
    ]  # fmt: skip


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    code = f"import federation.membership.{module}"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parents[1], timeout=60)


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_downward_only(module: str) -> None:
    tree = ast.parse((PKG / f"{module}.py").read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
    assert not roots & {"aiosd", "runtime", "sdk", "tests", "asyncio", "time", "socket"}


def test_core_uses_no_clock_and_no_global_random() -> None:
    src = (PKG / "swim.py").read_text(encoding="utf-8")
    assert "random.random(" not in src and "random.choice(" not in src and "time." not in src
