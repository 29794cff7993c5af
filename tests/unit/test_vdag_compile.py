"""vDAG compile: assignment, graph, nested expansion, and the bad inputs (each names the node)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from aiosd.specs import ParsedVdag, SpecError
from aiosd.specs.parse import parse_document
from aiosd.vdag.compile import CompiledVdag, assign, compile_graph


def doc(name: str, nodes: list[dict[str, Any]], edges: list[tuple[str, str]]) -> dict[str, Any]:
    conns: dict[str, list[dict[str, str]]] = {}
    for a, b in edges:
        conns.setdefault(b, []).append({"nodeLabel": a})
    values = {"vdagName": name, "vdagVersion": {"version": "1", "release-tag": "t"}, "nodes": nodes,
              "graph": {"connections": [{"nodeLabel": b, "inputs": i} for b, i in conns.items()]}}
    return {"header": {"templateUri": "Parser/V1", "parameters": {}}, "body": {"spec": {"values": values}}}


def parsed(d: dict[str, Any]) -> ParsedVdag:
    p = parse_document(d)
    assert isinstance(p, ParsedVdag)
    return p


def blk(label: str, block: str) -> dict[str, Any]:
    return {"nodeLabel": label, "manualBlockId": block}


def build(d: dict[str, Any], known: set[str], nested: dict[str, CompiledVdag] | None = None,
          cands: dict[str, list[str]] | None = None) -> CompiledVdag:
    spec = parsed(d).spec
    return compile_graph(spec, assign(spec, known, cands or {}), nested or {})


def test_linear_and_fan_out_fan_in() -> None:
    c = build(doc("lin", [blk("a", "A"), blk("b", "B"), blk("c", "C")], [("a", "b"), ("b", "c")]), {"A", "B", "C"})
    assert c.uri == "lin:1-t" and c.heads == ("a",) and c.tails == ("c",)
    assert c.t2() == {"A": ["B"], "B": ["C"], "C": []}
    assert c.stages["b"].parents == ("a",) and c.stages["b"].children == ("c",)
    f = build(doc("fan", [blk("s", "S"), blk("x", "X"), blk("y", "Y"), blk("z", "X"), blk("j", "J")],
                  [("s", "x"), ("s", "y"), ("s", "z"), ("x", "j"), ("y", "j"), ("z", "j")]), {"S", "X", "Y", "J"})
    assert f.stages["s"].children == ("x", "y", "z") and f.stages["j"].parents == ("x", "y", "z")
    # one block serving two nodes keeps two stages (AIOS's t2 collapses them)
    assert f.rev_mapping()["X"] == ["x", "z"]
    again = CompiledVdag.from_record(f.uri, f.to_record())
    assert again == f


def test_assignment_policy_must_yield_exactly_one_block() -> None:
    node = {"nodeLabel": "pick", "assignmentPolicyRule": {"policyRuleURI": "policy.vdag.assign-filter:v1"}}
    d = doc("as", [blk("a", "A"), node], [("a", "pick")])
    assert build(d, {"A", "B"}, cands={"pick": ["B"]}).stages["pick"].block_id == "B"
    for got in ([], ["A", "B"]):
        e = pytest.raises(SpecError, build, d, {"A", "B"}, cands={"pick": got}).value
        assert e.paths == ["body.spec.values.nodes[1].assignmentPolicyRule"]
        assert "'pick'" in str(e) and f"yielded {len(got)}" in str(e)


def test_bad_inputs_name_the_node() -> None:
    e = pytest.raises(SpecError, build, doc("m", [blk("a", "A"), blk("b", "nope")], [("a", "b")]), {"A"}).value
    assert e.paths == ["body.spec.values.nodes[1].manualBlockId"] and "'nope'" in str(e)
    # cycles and unknown labels are refused by the parser, before compile
    e = pytest.raises(SpecError, parse_document, doc("c", [blk("a", "A"), blk("b", "B")], [("a", "b"), ("b", "a")])).value
    assert "cycle" in str(e)
    e = pytest.raises(SpecError, parse_document, doc("u", [blk("a", "A")], [("a", "ghost")])).value
    assert "ghost" in str(e)
    # a missing manualBlockId (and no assignment rule)
    e = pytest.raises(SpecError, parse_document, doc("n", [{"nodeLabel": "a"}], [])).value
    assert e.paths == ["body.spec.values.nodes[0]"]


def test_nested_vdag_expands_inline_tails_to_downstream() -> None:
    inner = build(doc("inner", [blk("p", "P"), blk("q", "Q"), blk("r", "R")], [("p", "q"), ("p", "r")]),
                  {"P", "Q", "R"})
    outer_doc = doc("outer", [blk("a", "A"), {"nodeLabel": "sub", "nodeType": "vdag", "vdagURI": "inner:1-t"},
                              blk("z", "Z")], [("a", "sub"), ("sub", "z")])
    c = build(outer_doc, {"A", "Z"}, {"inner:1-t": inner})
    assert c.stages["a"].children == ("sub/p",)
    assert set(c.stages["z"].parents) == {"sub/q", "sub/r"}  # the sub-graph's tails, not its head
    assert c.nested == ("inner:1-t",) and c.heads == ("a",) and c.tails == ("z",)
    # missing nested vDAG, and a loop: inner2 nests outer, outer nests inner2
    e = pytest.raises(SpecError, build, outer_doc, {"A", "Z"}, {}).value
    assert e.paths == ["body.spec.values.nodes[1].vdagURI"] and "apply the nested" in str(e)
    looping = CompiledVdag("inner:1-t", inner.stages, inner.heads, inner.tails, ("outer:1-t",))
    e = pytest.raises(SpecError, build, outer_doc, {"A", "Z"}, {"inner:1-t": looping}).value
    assert "loop" in str(e)
    self_ref = doc("me", [{"nodeLabel": "x", "nodeType": "vdag", "vdagURI": "me:1-t"}], [])
    assert "loop" in str(pytest.raises(SpecError, build, self_ref, set(), {}).value)


def test_compile_100_stages_well_under_a_second() -> None:
    n = 100
    d = doc("long", [blk(f"s{i}", f"B{i % 7}") for i in range(n)], [(f"s{i}", f"s{i + 1}") for i in range(n - 1)])
    t0 = time.perf_counter()
    c = build(d, {f"B{i}" for i in range(7)})
    took = time.perf_counter() - t0
    assert len(c.stages) == n and c.heads == ("s0",) and c.tails == (f"s{n - 1}",)
    assert took < 3.0, took


AIOS_POSE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "aios-examples" / "vdag-pose-estimation_vdag.json"


@pytest.mark.skipif(not AIOS_POSE.is_file(), reason="the AIOS example specs are not in ../shared/reference")
def test_aios_pose_estimation_vdag_compiles_against_stand_in_blocks() -> None:
    p = parse_document(json.loads(AIOS_POSE.read_text()))
    assert isinstance(p, ParsedVdag)
    # Stand-ins of the same names (examples/vdag-stage blocks called object-det-1 and tracker-122).
    c = compile_graph(p.spec, assign(p.spec, {"object-det-1", "tracker-122"}, {}), {})
    assert c.uri == "pose-estimator:0.0.1-stable" and c.heads == ("obj-det-1",) and c.tails == ("tracker-0",)
    assert c.t2() == {"object-det-1": ["tracker-122"], "tracker-122": []}
    assert c.stages["tracker-0"].model_parameters == {"cosineDistance": 0.4, "budget": 0.2}
    assert c.stages["obj-det-1"].postprocessing is None  # an empty policyRuleURI is no policy
    e = pytest.raises(SpecError, assign, p.spec, {"object-det-1"}, {}).value
    assert "tracker-122" in str(e) and e.paths == ["body.spec.values.nodes[1].spec.values.manualBlockId"]
