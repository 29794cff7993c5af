"""The scheduler seam: best-fit/CPU-only placement, dry-run scores, clear refusals, policy contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosd.controller import Assignment, GpuView, NodeView, PlacementError, place
from aiosd.policies import (
    AIOSv1PolicyRule,
    PolicyConfigError,
    PolicyNotFound,
    PolicyOutputError,
    PolicyRegistry,
    PolicyRunner,
    builtin_registry,
)
from aiosd.policies.builtin import BUILTINS
from aiosd.policies.builtin.allocation import BestFitAllocator
from aiosd.specs import ParsedBlock, ParsedComponent, ResolvedBlock, parse_document, resolve_block


class ScanOnly(BestFitAllocator):
    """The built-in without the scheduler's index: it scans `payload.nodes` as a custom policy would."""

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        return super().eval(parameters, input_data, None)


class Liar(AIOSv1PolicyRule):
    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        return dict(self.parameters["answer"])


def _registry() -> PolicyRegistry:
    reg = PolicyRegistry()
    for uri, cls in BUILTINS.items():
        reg.register(uri, cls)
    reg.register("test.scan:v1", ScanOnly)
    reg.register("test.liar:v1", Liar)
    return reg


RUNNER = PolicyRunner(_registry())

COMPONENT = parse_document(
    {
        "header": {"templateUri": "Parser/V1"},
        "body": {
            "spec": {
                "values": {
                    "componentId": {"name": "m", "version": "1.0.0", "releaseTag": "stable"},
                    "componentType": "model",
                    "containerRegistryInfo": {"containerImage": "localhost/m:latest"},
                }
            }
        },
    }
)


def block(
    uri: str | None = "policy.resourceAllocator.best-fit:v1",
    settings_: dict[str, Any] | None = None,
    **parameters: Any,
) -> ResolvedBlock:
    policies = (
        []
        if uri is None
        else [
            {
                "values": {
                    "name": "resourceAllocator",
                    "policyRuleURI": uri,
                    "parameters": parameters,
                    "settings": settings_ or {},
                }
            }
        ]
    )
    b = parse_document(
        {
            "header": {"templateUri": "Parser/V1"},
            "body": {
                "spec": {
                    "values": {
                        "blockId": "b1",
                        "blockComponentURI": "model.m:1.0.0-stable",
                        "minInstances": 1,
                        "maxInstances": 100,
                        "policyRulesSpec": policies,
                    }
                }
            },
        }
    )
    assert isinstance(b, ParsedBlock) and isinstance(COMPONENT, ParsedComponent)
    return resolve_block(b, COMPONENT)


def gpu_node(
    node_id: str,
    *free: float,
    util: float = 0.0,
    total: float = 24000,
    vcpus: float = 16,
    mem: float = 64000,
    alive: bool = True,
    assignments: tuple[Assignment, ...] = (),
) -> NodeView:
    return NodeView(
        node_id=node_id,
        alive=alive,
        vcpus=vcpus,
        memory_mb=mem,
        assignments=assignments,
        gpus=tuple(
            GpuView(index=i, memory_total_mb=total, memory_free_mb=f, util_pct=util)
            for i, f in enumerate(free)
        ),
    )


def test_best_fit_takes_the_tightest_gpu_that_fits() -> None:
    nodes = [gpu_node("n1", 20000, 12000), gpu_node("n2", 9000, 10500)]
    r = place(block(gpus=1, min_gpu_free_memory=10000), nodes, 1, RUNNER)
    assert [(p.node_id, p.gpus) for p in r.placements] == [("n2", (1,))]
    assert r.policy_uri == "policy.resourceAllocator.best-fit:v1"


def test_best_fit_packs_then_moves_on_as_memory_runs_out() -> None:
    nodes = [gpu_node("n1", 20000), gpu_node("n2", 8000)]
    r = place(block(gpus=1, min_gpu_free_memory=4000), nodes, 5, RUNNER)
    # n2 (tightest) takes 2 x 4000, then n1 takes 5 x 4000 until full.
    assert [p.node_id for p in r.placements] == ["n2", "n2", "n1", "n1", "n1"]


def test_spread_takes_the_most_free_and_lowest_utilization() -> None:
    nodes = [gpu_node("n1", 20000, util=50), gpu_node("n2", 20000, util=10), gpu_node("n3", 12000)]
    r = place(
        block(settings_={"selection_mode": "balanced"}, gpus=1, min_gpu_free_memory=2000), nodes, 2, RUNNER
    )
    assert [p.node_id for p in r.placements] == ["n2", "n1"]


def test_utilization_cap_excludes_busy_gpus() -> None:
    nodes = [gpu_node("n1", 20000, util=95), gpu_node("n2", 15000, util=70)]
    r = place(block(gpus=1, max_gpu_utilization=0.8), nodes, 1, RUNNER)
    assert r.placements[0].node_id == "n2"


def test_multi_gpu_instances_get_distinct_gpus_on_one_node() -> None:
    nodes = [gpu_node("n1", 30000, 30000), gpu_node("n2", 20000, 20000, 20000)]
    r = place(block(gpus=3, min_gpu_free_memory=16000), nodes, 1, RUNNER)
    assert r.placements[0].node_id == "n2"
    assert sorted(r.placements[0].gpus) == [0, 1, 2]


def test_cpu_only_when_block_asks_for_no_gpus() -> None:
    nodes = [gpu_node("n1", vcpus=8, mem=4000), gpu_node("n2", vcpus=4, mem=16000)]
    r = place(block("policy.resourceAllocator.cpu:v1", cpus=2, min_memory_mb=2048), nodes, 3, RUNNER)
    assert [p.node_id for p in r.placements] == ["n1", "n2", "n2"]  # best fit by memory
    assert all(p.gpus == () for p in r.placements)
    # No allocator slot: the default best-fit with 0 GPUs; equal nodes take turns (fewest instances).
    default = place(block(None), [gpu_node("a"), gpu_node("b")], 4, RUNNER)
    assert [p.node_id for p in default.placements] == ["a", "b", "a", "b"]


def test_default_policy_spreads_by_instances_when_asked() -> None:
    r = place(block(settings_={"selection_mode": "spread"}), [gpu_node("a"), gpu_node("b")], 4, RUNNER)
    assert [p.node_id for p in r.placements] == ["a", "b", "a", "b"]


def test_dead_nodes_and_existing_assignments_are_respected() -> None:
    busy = (Assignment("other", "i1", gpus=(0,), vcpus=14, memory_mb=1000, gpu_memory_mb=20000),)
    nodes = [gpu_node("dead", 24000, alive=False), gpu_node("n1", 24000, 24000, assignments=busy)]
    r = place(block(gpus=1, min_gpu_free_memory=8000), nodes, 1, RUNNER)
    assert [(p.node_id, p.gpus) for p in r.placements] == [("n1", (1,))]  # GPU 0 is reserved
    with pytest.raises(PlacementError, match="2 vCPUs free"):
        place(block(gpus=1, cpus=4), nodes, 1, RUNNER)


def test_refusal_names_the_unmet_conditions_and_places_nothing() -> None:
    nodes = [gpu_node("n1", 12000, 9000), gpu_node("n2", 8000), gpu_node("gone", 40000, 40000, alive=False)]
    with pytest.raises(PlacementError) as err:
        place(block(gpus=2, min_gpu_free_memory=10000), nodes, 1, RUNNER)
    msg = str(err.value)
    assert msg.startswith("no node satisfies: 2 GPUs with >= 10000 MB free")
    assert "n1: 1 of 2 GPUs qualify (needs 2)" in msg
    assert "1 not alive" in msg
    # n1's 12000 MB GPU takes one 10000 MB instance; then nothing qualifies.
    with pytest.raises(PlacementError, match="only 1 of 4 instances fit"):
        place(block(gpus=1, min_gpu_free_memory=10000, gpu_memory_mb=10000), nodes[:1], 4, RUNNER)
    with pytest.raises(PlacementError, match="no alive nodes"):
        place(block(), [], 1, RUNNER)


def test_dry_run_scores_every_candidate_and_never_raises() -> None:
    nodes = [gpu_node("big", 40000, total=48000), gpu_node("small", 10000), gpu_node("none", 1000)]
    r = place(block(gpus=1, min_gpu_free_memory=10000), nodes, 4, RUNNER, dry_run=True)
    scores = {c.node_id: (c.capacity, c.score) for c in r.candidates}
    assert scores == {"big": (4, 1.0), "small": (1, 0.25), "none": (0, 0.0)}
    assert next(c for c in r.candidates if c.node_id == "none").reason == "0 of 1 GPUs qualify (needs 1)"
    assert len(r.placements) == 4 and r.score == 1.0
    assert r.aios_dry_run() == {
        "selection_score_data": {"score": 1.0, "node_info": {"node_id": "small", "gpus": [0]}}
    }
    r = place(block(gpus=1, min_gpu_free_memory=10000), nodes, 8, RUNNER, dry_run=True)
    assert len(r.placements) == 5 and r.score == 5 / 8
    assert r.unmet.startswith("no node satisfies")


def test_policy_contract_is_enforced() -> None:
    nodes = [gpu_node("n1", 20000)]
    with pytest.raises(PolicyNotFound, match="registered: "):
        place(block("policy.resourceAllocator.magic:v1"), nodes, 1, RUNNER)
    answers: list[tuple[dict[str, Any], str]] = [
        ({"node_id": "n9", "gpus": []}, "not an alive candidate"),
        ({"node_id": "n1", "gpus": [5]}, "does not exist"),
        ({"node_id": "n1", "gpus": ["0"]}, "list of GPU indices"),
        ({"node_id": "n1", "gpus": [0, 0]}, "distinct"),
    ]
    for answer, text in answers:
        with pytest.raises(PolicyOutputError, match=text):
            place(block("test.liar:v1", answer=answer, gpus=len(answer["gpus"]) or 0), nodes, 1, RUNNER)


def test_count_zero_and_bad_counts() -> None:
    assert place(block(), [gpu_node("n1")], 0, RUNNER).placements == ()
    with pytest.raises(ValueError, match="count"):
        place(block(), [gpu_node("n1")], -1, RUNNER)
    with pytest.raises(ValueError, match="appears twice"):
        place(block(), [gpu_node("n1"), gpu_node("n1")], 1, RUNNER)


def test_inputs_are_not_changed() -> None:
    nodes = [gpu_node("n1", 20000, 20000)]
    before = repr(nodes)
    place(block(gpus=1, min_gpu_free_memory=5000), nodes, 3, RUNNER)
    assert repr(nodes) == before


node_strategy = st.builds(
    lambda i, frees, utils, vcpus, mem: NodeView(
        node_id=f"n{i}",
        vcpus=vcpus,
        memory_mb=mem,
        gpus=tuple(
            GpuView(index=k, memory_total_mb=48000, memory_free_mb=f, util_pct=u)
            for k, (f, u) in enumerate(zip(frees, utils, strict=False))
        ),
    ),
    st.integers(0, 10**6),
    st.lists(st.sampled_from([0, 4000, 8000, 12000, 24000, 48000]), max_size=4),
    st.lists(st.sampled_from([0, 30, 60, 90]), min_size=4, max_size=4),
    st.sampled_from([0, 2, 8]),
    st.sampled_from([0, 2048, 8192]),
)


@settings(max_examples=120, deadline=None)
@given(
    nodes=st.lists(node_strategy, max_size=8, unique_by=lambda n: n.node_id),
    gpus=st.integers(0, 3),
    min_free=st.sampled_from([0, 4000, 10000]),
    cpus=st.sampled_from([0, 1, 4]),
    mode=st.sampled_from(["best-fit", "spread", "first-fit"]),
    count=st.integers(1, 12),
)
def test_index_and_scan_agree(
    nodes: list[NodeView], gpus: int, min_free: int, cpus: int, mode: str, count: int
) -> None:
    params: dict[str, Any] = {
        "gpus": gpus,
        "min_gpu_free_memory": min_free,
        "cpus": cpus,
        "max_gpu_utilization": 0.6,
    }
    fast = place(block(settings_={"selection_mode": mode}, **params), nodes, count, RUNNER, dry_run=True)
    slow = place(
        block("test.scan:v1", settings_={"selection_mode": mode}, **params),
        nodes,
        count,
        RUNNER,
        dry_run=True,
    )
    assert fast.placements == slow.placements
    # Dry-run scores agree with what placement achieved: a node's capacity bounds what it got.
    got: dict[str, int] = {}
    for p in fast.placements:
        got[p.node_id] = got.get(p.node_id, 0) + 1
    caps = {c.node_id: c.capacity for c in fast.candidates}
    assert all(got[n] <= caps[n] for n in got)
    if sum(caps.values()) == 0:
        assert fast.placements == ()


def test_builtin_registry_is_what_the_runner_uses_by_default() -> None:
    r = place(block(), [gpu_node("n1")], 1, PolicyRunner(builtin_registry()))
    assert r.placements[0].node_id == "n1"


def test_gpus_are_shared_by_memory_unless_a_holder_or_the_block_wants_them_alone() -> None:
    shared = (Assignment("other", "i1", gpus=(0,), gpu_memory_mb=4000),)
    alone = (Assignment("other", "i1", gpus=(0,), exclusive=True),)
    # Shared holder: best-fit packs onto GPU 0 (less free after the reservation) when memory allows.
    r = place(block(gpus=1, min_gpu_free_memory=4000), [gpu_node("n1", 24000, 24000, assignments=shared)], 1, RUNNER)
    assert r.placements[0].gpus == (0,)
    # A block that wants its GPUs alone skips a GPU with any holder, and holds its own alone.
    r = place(block(gpus=1, exclusive_gpus=True), [gpu_node("n1", 24000, 24000, assignments=shared)], 2, RUNNER,
              dry_run=True)
    assert [p.gpus for p in r.placements] == [(1,)] and r.score == 0.5
    assert r.candidates[0].capacity == 1
    # An exclusive holder keeps everyone off its GPU, however much memory is free.
    with pytest.raises(PlacementError) as err:
        place(block(gpus=1), [gpu_node("n1", 24000, assignments=alone)], 1, RUNNER)
    assert "n1: 0 of 1 GPUs qualify (needs 1); 1 held by other instances" in str(err.value)
    assert "not held by any other instance" not in str(err.value)
    with pytest.raises(PlacementError, match="not held by any other instance"):
        place(block(gpus=1, exclusive_gpus=True), [gpu_node("n1", 24000, assignments=shared)], 1, RUNNER)
    # Within one placement: the first exclusive instance takes GPU 0, the next one GPU 1, then none.
    r = place(block(gpus=1, exclusive_gpus=True), [gpu_node("n1", 24000, 24000)], 3, RUNNER, dry_run=True)
    assert sorted(p.gpus for p in r.placements) == [(0,), (1,)]


def test_exclusive_gpus_must_be_a_boolean_and_policies_may_not_choose_held_gpus() -> None:
    with pytest.raises(PolicyConfigError, match="parameters.exclusive_gpus: must be true or false"):
        place(block(gpus=1, exclusive_gpus="yes"), [gpu_node("n1", 24000)], 1, RUNNER)
    alone = (Assignment("other", "i1", gpus=(0,), exclusive=True),)
    with pytest.raises(PolicyOutputError, match="GPU 0 on node n1 is held by another instance exclusively"):
        place(block("test.liar:v1", answer={"node_id": "n1", "gpus": [0]}, gpus=1),
              [gpu_node("n1", 24000, assignments=alone)], 1, RUNNER)
    # A custom policy sees holders and held_exclusive in payload.nodes[].gpus[].
    seen: list[Any] = []

    class Peek(AIOSv1PolicyRule):
        def eval(self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any) -> dict[str, Any]:
            seen.append([dict(g) for g in input_data["payload"]["nodes"][0]["gpus"]])
            return {"node_id": "n1", "gpus": [1]}

    reg = _registry()
    reg.register("test.peek:v1", Peek)
    place(block("test.peek:v1", gpus=1), [gpu_node("n1", 24000, 24000, assignments=alone)], 1, PolicyRunner(reg))
    assert [(g["index"], g["holders"], g["held_exclusive"]) for g in seen[0]] == [(0, 1, True), (1, 0, False)]
