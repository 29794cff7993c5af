"""A published resourceAllocator runs in the real sandbox and places blocks: through
`place_published` (answers checked like a built-in's; a policy that lies, hangs, crashes or answers
garbage fails with its name and places nothing), and through a real daemon's `aiosd apply`."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aiosd.controller import GpuView, NodeView, PlacementError
from aiosd.controller.allocator import load_published, place_published
from aiosd.policies.archive import pack_dir, pack_files
from aiosd.policies.errors import PolicyCrashed, PolicyOutputError, PolicyTimeout
from aiosd.policies.sandbox import SandboxConfig
from aiosd.policies.service import PoliciesService, sandbox_root
from federation.identity import NodeKey
from storage import Store
from tests.daemons import Daemon
from tests.instances import echo_block_docs
from tests.unit.test_placement import block
from tests.waiting import wait_sync

FIRST = "test.first-node:v1-a"
# Always the first node of payload.nodes, no GPUs; records nothing. Answers the AIOS dry run too.
FIRST_NODE = '''
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass
    def eval(self, parameters, input_data, context):
        nodes = input_data["payload"]["nodes"]
        node = {"node_id": nodes[0]["node_id"], "gpus": []} if nodes else None
        if input_data["action"] == "dry_run":
            return {"selection_score_data": {"score": 1.0 if node else 0.0, "node_info": node}}
        return node or {"node_id": None, "gpus": []}
'''
# Misbehaves as the block's allocator parameters say.
HOSTILE = '''
import os
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.mode = parameters.get("mode", "ghost")
    def eval(self, parameters, input_data, context):
        if self.mode == "ghost":
            return {"node_id": "no-such-node", "gpus": []}
        if self.mode == "gpu":
            return {"node_id": input_data["payload"]["nodes"][0]["node_id"], "gpus": [9]}
        if self.mode == "loop":
            while True:
                pass
        if self.mode == "exit":
            os._exit(3)
        if self.mode == "dry":
            return {"selection_score_data": {"score": 7}}
        return ["not", "an", "object"]
'''
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[PoliciesService]:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    store = Store.open(data / "db")
    base = SandboxConfig.default(sandbox_root(data))
    cfg = SandboxConfig(root=base.root, python=base.python, run_as_uid=base.run_as_uid,
                        run_as_gid=base.run_as_gid, call_timeout_s=1.0, memory_limit_mb=512)
    try:
        async with PoliciesService(data, store, NodeKey.generate(), cfg) as s:
            await s.publish(FIRST, pack_files({"code/function.py": FIRST_NODE.encode()}))
            await s.publish("test.hostile:v1-a", pack_files({"code/function.py": HOSTILE.encode()}))
            yield s
    finally:
        store.close()
        shutil.rmtree(cfg.root, ignore_errors=True)


def _nodes() -> list[NodeView]:
    return [NodeView(node_id=n, vcpus=8, memory_mb=16000, gpus=(GpuView(0, 24000, 24000),)) for n in ("a", "b")]


async def test_the_published_allocator_places_every_instance(svc: PoliciesService) -> None:
    b = block(FIRST)
    handle = await load_published(b, svc.runner)
    assert handle is not None and handle.uri == FIRST
    result = await place_published(b, _nodes(), 3, handle)
    assert [(p.node_id, p.gpus) for p in result.placements] == [("a", ())] * 3
    assert result.policy_uri == FIRST and result.score == 1.0
    dry = await place_published(b, _nodes(), 2, handle, dry_run=True)
    assert dry.dry_run and dry.score == 1.0 and [p.node_id for p in dry.placements] == ["a"]
    assert [c.node_id for c in dry.candidates] == ["a", "b"]
    none = await place_published(b, [], 1, handle, dry_run=True)
    assert none.score == 0.0 and none.placements == () and "no alive nodes" in none.unmet
    with pytest.raises(PlacementError, match="no node satisfies"):
        await place_published(b, [], 1, handle)
    assert await load_published(block("policy.resourceAllocator.best-fit:v1"), svc.runner) is None


async def test_the_fewest_instances_example_spreads_and_reserves(svc: PoliciesService) -> None:
    uri = "policy.resourceAllocator.fewest-instances:v1-stable"
    await svc.publish(uri, pack_dir(ROOT / "examples" / "policies" / "fewest-instances"))
    b = block(uri, cpus=3)
    handle = await load_published(b, svc.runner)
    assert handle is not None
    result = await place_published(b, _nodes(), 4, handle)  # 8 vCPUs each: two instances per node
    assert [p.node_id for p in result.placements] == ["a", "b", "a", "b"]
    with pytest.raises(PlacementError, match="only 4 of 5 instances fit"):
        await place_published(b, _nodes(), 5, handle)
    dry = await place_published(b, _nodes(), 1, handle, dry_run=True)
    assert dry.score == 1.0 and [p.node_id for p in dry.placements] == ["a"]


@pytest.mark.parametrize(("mode", "error", "why"), [
    ("ghost", PolicyOutputError, "returned a bad result: node_id 'no-such-node' is not an alive candidate node"),
    ("gpu", PolicyOutputError, "returned a bad result: gpus must name 0 distinct GPUs, got \\[9\\]"),
    ("garbage", PolicyOutputError, "returned a bad result: expected a JSON object \\(dict\\), got list"),
    ("loop", PolicyTimeout, "failed: no answer within 1 s"),
    ("exit", PolicyCrashed, "failed: its sandbox worker died during the call \\(exit code 3\\)"),
])
async def test_a_misbehaving_allocator_fails_naming_itself(svc: PoliciesService, mode: str, error: type[Exception],
                                                           why: str) -> None:
    handle = await load_published(block("test.hostile:v1-a", mode=mode), svc.runner)
    assert handle is not None
    with pytest.raises(error, match=f"policy test.hostile:v1-a {why}"):
        await place_published(block("test.hostile:v1-a", mode=mode), _nodes(), 2, handle)
    # The sandbox keeps serving: the well-behaved allocator still answers.
    first = await load_published(block(FIRST), svc.runner)
    assert first is not None and len((await place_published(block(FIRST), _nodes(), 1, first)).placements) == 1


async def test_a_dry_run_answer_outside_the_contract_is_refused(svc: PoliciesService) -> None:
    handle = await load_published(block("test.hostile:v1-a", mode="dry"), svc.runner)
    assert handle is not None
    with pytest.raises(PolicyOutputError, match="selection_score_data.score must be a number within 0..1"):
        await place_published(block("test.hostile:v1-a", mode="dry"), _nodes(), 1, handle, dry_run=True)


# ----- a real daemon: `aiosd policy push` then `aiosd apply` --------------------------------------
@pytest.fixture
def _sandbox_cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(sandbox_root(tmp_path / "n1"), ignore_errors=True)


def _policy_dir(root: Path, name: str, code: str) -> Path:
    (root / name / "code").mkdir(parents=True)
    (root / name / "code" / "function.py").write_text(code)
    return root / name


@pytest.mark.usefixtures("_sandbox_cleanup")
def test_apply_places_a_block_with_a_pushed_allocator(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path)
    daemons.append(d.start())
    d.json("policy", "push", str(_policy_dir(tmp_path, "first", FIRST_NODE)), "--uri", FIRST)
    spec = tmp_path / "first.json"
    spec.write_text(echo_block_docs("first-echo", 2, {"uri": FIRST}))
    dry = d.json("apply", "-f", str(spec), "--dry-run")
    placement = next(x for x in dry["documents"] if x["kind"] == "block")["placement"]
    assert placement["policy"] == FIRST and placement["score"] == 1.0
    r = d.cli("apply", "-f", str(spec), timeout_s=120)
    assert r.returncode == 0 and "ready" in r.stdout, r.stdout + r.stderr
    assert len(d.json("describe", "block", "first-echo")["status"]["instances"]) == 2
    assert d.json("infer", "first-echo", "--data", '{"message": "hi"}')["instance_id"].startswith("first-echo-")

    # --cluster: the leader runs the same published policy (its sandbox, awaited) and commits.
    cspec = tmp_path / "first-cluster.json"
    cspec.write_text(echo_block_docs("first-cluster", 2, {"uri": FIRST}))
    placed = d.json("apply", "-f", str(cspec), "--cluster")
    insts = next(x for x in placed["documents"] if x.get("kind") == "block")
    assert insts, placed
    wait_sync(lambda: len([i for i in d.json("ps")["instances"] if i["block_id"] == "first-cluster"
                           and i["state"] == "healthy"]) == 2, timeout_s=60)
    assert d.cli("delete", "block", "first-cluster").returncode == 0

    # A policy that names a node that does not exist: apply fails naming it, nothing is created.
    d.json("policy", "push", str(_policy_dir(tmp_path, "ghost", HOSTILE)), "--uri", "test.hostile:v1-a")
    bad = tmp_path / "ghost.json"
    bad.write_text(echo_block_docs("ghost-echo", 1, {"uri": "test.hostile:v1-a", "parameters": {"mode": "ghost"}}))
    r = d.cli("apply", "-f", str(bad))
    assert r.returncode == 2, r.stdout + r.stderr  # 422: the block's policy is at fault
    assert "policy test.hostile:v1-a returned a bad result: node_id 'no-such-node'" in r.stderr
    assert d.cli("describe", "block", "ghost-echo").returncode == 1
    assert "ghost-echo" not in json.dumps(d.json("get", "blocks"))
    assert d.json("status")["node_id"]  # the daemon keeps running
    assert d.cli("delete", "block", "first-echo").returncode == 0
