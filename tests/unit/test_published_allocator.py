"""A published resourceAllocator's answers are checked like a built-in's (PlacementRun), its dry-run
answer is read strictly, and `apply --cluster` refuses a published allocator naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from aiosd.controller import Assignment, PlacementError, place
from aiosd.controller.allocator import read_dry_run
from aiosd.controller.placement import PlacementRun, allocator_ref, requirement_for
from aiosd.policies import PolicyOutputError
from aiosd.policies.builtin.allocation import BEST_FIT_URI, Requirement
from tests.unit.test_placement import RUNNER, block, gpu_node

URI = "test.published:v1-a"


def _run(count: int = 1, **parameters: Any) -> PlacementRun:
    b = block(URI, **parameters)
    req = requirement_for(None, parameters, {}, URI)
    held = Assignment("other", "other-0", gpus=(1,), exclusive=True)
    nodes = [gpu_node("n1", 20000, 20000, assignments=(held,)), gpu_node("n2", 20000),
             gpu_node("dead", 20000, alive=False)]
    return PlacementRun(b, nodes, count, URI, req)


def test_an_answer_is_reserved_and_the_next_input_shows_it() -> None:
    run = _run(2, gpus=1, gpu_memory_mb=8000)
    first = run.input_for(0)
    assert first["action"] == "allocation" and first["payload"]["instance_index"] == 0
    assert [v["node_id"] for v in first["payload"]["nodes"]] == ["n1", "n2"]  # alive nodes only
    assert run.accept({"node_id": "n2", "gpus": [0]})
    nxt = run.input_for(1)["payload"]
    assert nxt["instance_index"] == 1
    assert nxt["nodes"][1]["gpus"][0]["memory_free_mb"] == 12000 and nxt["nodes"][1]["instances"] == 1
    assert run.accept({"node_id": "n2", "gpus": [0]})
    result = run.result()
    assert [(p.node_id, p.gpus) for p in result.placements] == [("n2", (0,)), ("n2", (0,))]
    assert result.policy_uri == URI and result.score == 1.0


@pytest.mark.parametrize(("answer", "why"), [
    ({"node_id": "ghost", "gpus": [0]}, "node_id 'ghost' is not an alive candidate node"),
    ({"node_id": "dead", "gpus": [0]}, "node_id 'dead' is not an alive candidate node"),
    ({"node_id": 7, "gpus": [0]}, "node_id '7' is not an alive candidate node"),
    ({"node_id": "n1", "gpus": [5]}, "GPU 5 does not exist on node n1"),
    ({"node_id": "n1", "gpus": [1]}, "GPU 1 on node n1 is held by another instance exclusively"),
    ({"node_id": "n1", "gpus": [0, 0]}, "gpus must name 1 distinct GPUs"),
    ({"node_id": "n1", "gpus": "0"}, "gpus must be a list of GPU indices"),
    ({"node_id": "n1", "gpus": [True]}, "gpus must be a list of GPU indices"),
])
def test_a_bad_answer_names_the_policy_and_places_nothing(answer: dict[str, Any], why: str) -> None:
    run = _run(1, gpus=1)
    with pytest.raises(PolicyOutputError, match=f"policy {URI} returned a bad result: {why}"):
        run.accept(answer)
    assert run.placements == []


def test_no_node_from_the_policy_refuses_with_the_conditions() -> None:
    run = _run(2, gpus=1)
    assert run.accept({"node_id": "n2", "gpus": [0]})
    assert not run.accept({"node_id": None})
    with pytest.raises(PlacementError, match="only 1 of 2 instances fit; no node satisfies"):
        run.result()


def test_a_dry_run_keeps_the_policy_score() -> None:
    b = block(URI)
    run = PlacementRun(b, [gpu_node("n1")], 3, URI, Requirement(), dry_run=True)
    assert run.accept({"node_id": "n1", "gpus": []})
    result = run.result(0.25)
    assert result.dry_run and result.score == 0.25 and [c.node_id for c in result.candidates] == ["n1"]
    assert result.aios_dry_run()["selection_score_data"] == {"score": 0.25,
                                                             "node_info": {"node_id": "n1", "gpus": []}}


@pytest.mark.parametrize(("out", "why"), [
    ({}, "selection_score_data must be an object"),
    ({"selection_score_data": [1]}, "selection_score_data must be an object"),
    ({"selection_score_data": {"score": 1.5}}, "score must be a number within 0..1, got '1.5'"),
    ({"selection_score_data": {"score": True}}, "score must be a number within 0..1"),
    ({"selection_score_data": {"score": "0.5"}}, "score must be a number within 0..1"),
    ({"selection_score_data": {"score": float("nan")}}, "score must be a number within 0..1"),
    ({"selection_score_data": {"score": 1, "node_info": "n1"}}, "node_info must be"),
])
def test_a_bad_dry_run_answer_is_refused(out: dict[str, Any], why: str) -> None:
    with pytest.raises(PolicyOutputError, match=f"policy {URI} returned a bad result: .*{why}"):
        read_dry_run(URI, out)


def test_a_good_dry_run_answer_is_read() -> None:
    assert read_dry_run(URI, {"selection_score_data": {"score": 1, "node_info": None}}) == (1.0, None)
    info = {"node_id": "n1", "gpus": []}
    assert read_dry_run(URI, {"selection_score_data": {"score": 0.5, "node_info": info}}) == (0.5, info)


def test_requirement_and_allocator_ref_of_a_published_allocator() -> None:
    assert requirement_for(None, {"gpus": 2, "gpu_memory_mb": 100}, {}, URI).gpus == 2
    assert requirement_for(None, {"gpus": "many"}, {}, URI) == Requirement()  # unreadable: reserves nothing
    ref = allocator_ref(block(URI, gpus=1))
    assert (ref.uri, dict(ref.parameters or {}), ref.rule_id) == (URI, {"gpus": 1}, "b1/resourceAllocator")
    assert allocator_ref(block(None)).uri == BEST_FIT_URI


def test_place_still_runs_builtins_in_process() -> None:
    result = place(block(BEST_FIT_URI, gpus=1), [gpu_node("n1", 20000)], 1, RUNNER)
    assert [p.node_id for p in result.placements] == ["n1"]
