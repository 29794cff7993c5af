"""The controller's replicated state machine and its pure planning: fencing, snapshots, scale, moves."""

from __future__ import annotations

import pytest

from aiosd.config import RaftSettings
from aiosd.controller.errors import PlacementError
from aiosd.controller.scheduler import plan_moves, plan_scale
from aiosd.controller.service import raft_config
from aiosd.controller.state import (
    MAX_TASKS,
    Allocator,
    BlockSpec,
    ClusterState,
    CommandError,
    InstanceSpec,
    MoveInstances,
    PlaceBlock,
    RemoveBlock,
    TaskState,
    decode_command,
    encode_command,
)
from aiosd.controller.wire import GpuHold, GpuReport, Inventory
from aiosd.errors import ConfigError
from aiosd.policies import PolicyRunner, builtin_registry

RUNNER = PolicyRunner(builtin_registry())
SPREAD = Allocator(uri="policy.resourceAllocator.cpu:v1", parameters={"cpus": 1},
                   settings={"selection_mode": "spread"})


def place(term: int, block: str, *nodes: str) -> bytes:
    return encode_command(PlaceBlock(term=term, block_id=block, instances=tuple(
        InstanceSpec(instance_id=f"{block}-{i}", node_id=n) for i, n in enumerate(nodes))))


def test_commands_apply_in_order_and_older_terms_are_fenced() -> None:
    sm = ClusterState()
    sm.apply(1, place(2, "b", "n1", "n2"))
    sm.apply(2, encode_command(MoveInstances(term=3, block_id="b", moves=(
        InstanceSpec(instance_id="b-0", node_id="n3"),))))
    before = sm.view()
    sm.apply(3, place(2, "b", "n9"))  # a deposed leader's command: refused, counted
    after = sm.view()
    assert after.fenced == 1 and after.blocks == before.blocks and after.max_term == 3
    assert {i.instance_id: i.node_id for i in after.blocks["b"].values()} == {"b-0": "n3", "b-1": "n2"}
    assert [i.instance_id for i in after.instances_on("n3")] == ["b-0"]
    sm.apply(4, encode_command(RemoveBlock(term=3, block_id="b")))
    assert sm.view().blocks == {} and sm.view().applied_index == 4


def test_garbage_in_the_log_changes_nothing() -> None:
    sm = ClusterState()
    sm.apply(1, place(1, "b", "n1"))
    sm.apply(2, b"\xc1 not msgpack")
    sm.apply(3, encode_command(MoveInstances(term=1, block_id="missing", moves=())))
    assert sm.rejected == 2 and set(sm.view().blocks) == {"b"}


def test_decode_names_the_bad_field() -> None:
    import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published

    raw = msgpack.packb({"kind": "ctl.place", "v": 1, "term": -1, "block_id": "b", "instances": ()})
    with pytest.raises(CommandError, match=r"ctl.place.term"):
        decode_command(raw)
    with pytest.raises(CommandError, match="not msgpack"):
        decode_command(b"\xc1")


def test_snapshot_restore_round_trip() -> None:
    sm = ClusterState()
    sm.apply(1, place(1, "a", "n1", "n2"))
    sm.apply(2, encode_command(TaskState(term=1, task_id="t1", task_kind="reassign", state="done", detail="x")))
    sm.apply(3, place(0, "z", "n1"))  # fenced, and the counter survives the snapshot
    other = ClusterState()
    other.restore(3, sm.snapshot())
    assert other.view() == sm.view()


def test_block_specs_travel_with_placements_survive_scales_snapshots_and_go_with_removal() -> None:
    spec = BlockSpec(block={"id": "b", "document": {"body": {"spec": {"values": {"policyRulesSpec": [1, 2]}}}}},
                     component={"uri": "model.x:1.0.0-stable", "document": {}})
    sm = ClusterState()
    sm.apply(1, encode_command(PlaceBlock(term=1, block_id="b", spec=spec, instances=(
        InstanceSpec(instance_id="b-0", node_id="n1"),))))
    assert sm.view().specs["b"].block["id"] == "b"
    sm.apply(2, place(1, "b", "n1", "n2"))  # a scale carries no spec: the committed one stays
    assert sm.view().specs["b"].component["uri"] == "model.x:1.0.0-stable" and len(sm.view().blocks["b"]) == 2
    copy = ClusterState()
    copy.restore(2, sm.snapshot())
    assert copy.view().specs["b"].block == sm.view().specs["b"].block
    sm.apply(3, encode_command(RemoveBlock(term=1, block_id="b")))
    assert "b" not in sm.view().specs and "b" not in sm.view().blocks


def test_tasks_are_a_bounded_fifo() -> None:
    sm = ClusterState()
    for i in range(MAX_TASKS + 5):
        sm.apply(i + 1, encode_command(TaskState(term=1, task_id=f"t{i}", task_kind="k", state="done")))
    tasks = sm.view().tasks
    assert len(tasks) == MAX_TASKS and tasks[0].task_id == "t5"


def inv(node: str, *gpus_free: float) -> Inventory:
    return Inventory(node_id=node, cluster="c", vcpus=4, memory_mb=8000, gpus=tuple(
        GpuReport(index=i, memory_total_mb=24000, memory_free_mb=f) for i, f in enumerate(gpus_free)))


def test_scale_keeps_running_instances_and_spreads_new_ones() -> None:
    sm = ClusterState()
    invs = [inv("n1"), inv("n2"), inv("n3")]
    cmd = plan_scale(sm.view(), invs, "b", 2, SPREAD, RUNNER, term=1)
    sm.apply(1, encode_command(cmd))
    first = {s.instance_id: s.node_id for s in cmd.instances}
    assert len(set(first.values())) == 2
    up = plan_scale(sm.view(), invs, "b", 3, SPREAD, RUNNER, term=1)
    assert {s.instance_id: s.node_id for s in up.instances}.items() >= first.items()
    assert len({s.node_id for s in up.instances}) == 3
    down = plan_scale(sm.view(), invs, "b", 1, SPREAD, RUNNER, term=1)
    assert [s.instance_id for s in down.instances] == ["b-0"]


def test_scale_respects_gpus_and_names_unmet_conditions() -> None:
    gpu2 = Allocator(parameters={"gpus": 2, "min_gpu_free_memory": 10000})
    invs = [inv("n1", 4000, 20000), inv("n2", 12000, 11000), inv("n3")]
    cmd = plan_scale(ClusterState().view(), invs, "llm", 1, gpu2, RUNNER, term=1)
    assert [(s.node_id, sorted(s.gpus)) for s in cmd.instances] == [("n2", [0, 1])]
    with pytest.raises(PlacementError, match="no node satisfies: 2 GPUs with >= 10000 MB free"):
        plan_scale(ClusterState().view(), invs, "llm", 2, gpu2, RUNNER, term=1)


def test_gpus_held_by_blocks_applied_on_a_node_are_not_placed_onto() -> None:
    gpu1 = Allocator(parameters={"gpus": 1, "min_gpu_free_memory": 4000})
    held = Inventory(node_id="n1", cluster="c", vcpus=4, memory_mb=8000, gpus=(
        GpuReport(index=0, memory_total_mb=24000, memory_free_mb=20000),
        GpuReport(index=1, memory_total_mb=24000, memory_free_mb=20000)),
        held=(GpuHold(instance_id="local-0", gpus=(0,), exclusive=True),))
    cmd = plan_scale(ClusterState().view(), [held], "b", 1, gpu1, RUNNER, term=1)
    assert [(s.node_id, s.gpus) for s in cmd.instances] == [("n1", (1,))]
    with pytest.raises(PlacementError, match="1 of 2 GPUs qualify \\(needs 2\\); 1 held by other instances"):
        plan_scale(ClusterState().view(), [held], "b", 2, gpu1.model_copy(update={"parameters": {"gpus": 2}}),
                   RUNNER, term=1)
    # A shared local holder leaves the GPU to others (memory decides).
    shared = held.model_copy(update={"held": (GpuHold(instance_id="local-0", gpus=(0, 1), exclusive=False),)})
    assert len(plan_scale(ClusterState().view(), [shared], "b", 2, gpu1, RUNNER, term=1).instances) == 2


def test_moves_take_orphans_off_dead_nodes_with_the_same_allocator() -> None:
    sm = ClusterState()
    sm.apply(1, encode_command(PlaceBlock(term=1, block_id="b", allocator=SPREAD, instances=(
        InstanceSpec(instance_id="b-0", node_id="dead"), InstanceSpec(instance_id="b-1", node_id="n1")))))
    invs = [inv("n1"), inv("n2")]
    moves = plan_moves(sm.view(), invs, {"n1", "n2"}, RUNNER, term=2)
    assert [(m.block_id, [(s.instance_id, s.node_id) for s in m.moves]) for m in moves] == [("b", [("b-0", "n2")])]
    assert plan_moves(sm.view(), invs, {"n1", "n2", "dead"}, RUNNER, term=2) == []


def test_raft_settings_map_onto_raft_config() -> None:
    assert raft_config(RaftSettings()).election_timeout_min_s == 0.5
    cfg = raft_config(RaftSettings(profile="test", max_voters=3))
    assert (cfg.election_timeout_max_s, cfg.max_voters) == (0.6, 3)
    with pytest.raises(ConfigError, match="heartbeat_interval_s"):
        raft_config(RaftSettings(heartbeat_interval_s=0.4))
