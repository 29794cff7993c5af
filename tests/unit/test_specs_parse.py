"""The envelope, each kind's model, document streams, and the path every rejection names."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from aiosd.specs import (
    Kind,
    ParsedCluster,
    ParsedMgmt,
    ParsedNode,
    ParsedSearch,
    SpecError,
    detect_kind,
    parse_document,
    parse_documents,
)
from aiosd.specs.errors import MAX_PROBLEMS_SHOWN, Problem


def envelope(values: dict[str, Any], header: str = "header") -> dict[str, Any]:
    return {header: {"templateUri": "Parser/V1", "parameters": {}}, "body": {"spec": {"values": values}}}


def block_values() -> dict[str, Any]:
    return {
        "blockId": "b1",
        "blockComponentURI": "model.echo:1.0.0-stable",
        "minInstances": 1,
        "maxInstances": 2,
        "policyRulesSpec": [
            {"values": {"name": "loadBalancer", "policyRuleURI": "policy.loadBalancer.round-robin:v1"}},
            {"values": {"name": "autoscaler", "policyRuleURI": "policy.autoscaler.queue:v1"}},
            {"values": {"name": "resourceAllocator", "policyRuleURI": "policy.resourceAllocator.cpu:v1"}},
        ],
    }


def rejected(doc: object, action: str | None = None) -> SpecError:
    with pytest.raises(SpecError) as err:
        parse_document(doc, action)
    return err.value


def set_in(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(v: dict[str, Any]) -> None:
        cur: Any = v
        for p in path[:-1]:
            cur = cur[p]
        cur[path[-1]] = value

    return mutate


BLOCK_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "uri not a string",
        set_in(["policyRulesSpec", 2, "values", "policyRuleURI"], 7),
        "body.spec.values.policyRulesSpec[2].values.policyRuleURI",
        "must be a string, got a number",
    ),
    (
        "uri without version",
        set_in(["policyRulesSpec", 2, "values", "policyRuleURI"], "just-a-name"),
        "body.spec.values.policyRulesSpec[2].values.policyRuleURI",
        "must be a string like name:version",
    ),
    (
        "negative min",
        set_in(["minInstances"], -1),
        "body.spec.values.minInstances",
        "greater than or equal to 0",
    ),
    (
        "min over max",
        set_in(["minInstances"], 5),
        "body.spec.values.maxInstances",
        "must be >= minInstances (5)",
    ),
    ("int as string", set_in(["maxInstances"], "2"), "body.spec.values.maxInstances", "must be an integer"),
    (
        "bad component uri",
        set_in(["blockComponentURI"], "echo"),
        "body.spec.values.blockComponentURI",
        "type.name:version-releaseTag",
    ),
    ("bad block id", set_in(["blockId"], "has space"), "body.spec.values.blockId", "must be a name"),
    (
        "settings not an object",
        set_in(["initSettings"], [1]),
        "body.spec.values.initSettings",
        "must be an object",
    ),
    (
        "policy without name",
        lambda v: v["policyRulesSpec"][0]["values"].pop("name"),
        "body.spec.values.policyRulesSpec[0].values.name",
        "is required",
    ),
    (
        "duplicate slot",
        set_in(["policyRulesSpec", 1, "values", "name"], "loadBalancer"),
        "body.spec.values.policyRulesSpec[1].values.name",
        "already used by policyRulesSpec[0]",
    ),
    (
        "policies not a list",
        set_in(["policyRulesSpec"], {"a": 1}),
        "body.spec.values.policyRulesSpec",
        "must be an array",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "path", "text"), BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_block_rejection_names_the_path(
    name: str, mutate: Callable[[dict[str, Any]], None], path: str, text: str
) -> None:
    values = block_values()
    mutate(values)
    err = rejected(envelope(values))
    assert path in err.paths, str(err)
    problem = next(p for p in err.problems if p.path == path)
    assert text in problem.message
    assert str(err).startswith(path + ": ")


def test_rejection_changes_nothing_in_the_input() -> None:
    values = block_values()
    values["minInstances"] = "x"
    doc = envelope(values)
    before = copy.deepcopy(doc)
    rejected(doc)
    assert doc == before


def test_unknown_keys_are_kept() -> None:
    values = block_values()
    values["futureKey"] = {"x": 1}
    parsed = parse_document(envelope(values))
    assert parsed.spec.model_extra == {"futureKey": {"x": 1}}


@pytest.mark.parametrize(
    ("doc", "path", "text"),
    [
        ([], "document", "must be a JSON object"),
        ({"body": {}}, "header", "is required"),
        ({"header": [], "body": {}}, "header", "must be an object"),
        ({"header": {"templateUri": 3}, "body": {}}, "header.templateUri", "must be a template URI"),
        (
            {"header": {"templateUri": "Custom/X"}, "body": {}},
            "header.templateUri",
            "only Parser/V1 is built in",
        ),
        (
            {"head": {"templateUri": "Parser/V1", "parameters": 3}, "body": {}},
            "head.parameters",
            "must be an object",
        ),
        ({"parser_version": "Parser/V2", "body": {}}, "parser_version", "is not available"),
        ({"header": {"templateUri": "Parser/V1"}}, "body", "must be an object"),
        ({"header": {"templateUri": "Parser/V1"}, "body": {"spec": 1}}, "body.spec", "must be an object"),
        (
            {"header": {"templateUri": "Parser/V1"}, "body": {"spec": {}}},
            "body.spec.values",
            "must be an object",
        ),
        (envelope({"what": 1}), "body.spec.values", "cannot tell the document kind"),
    ],
)
def test_envelope_rejections(doc: object, path: str, text: str) -> None:
    err = rejected(doc)
    assert err.problems[0].path == path
    assert text in err.problems[0].message


def test_action_overrides_shape_and_unknown_action_lists_known() -> None:
    assert detect_kind({"componentId": {}}, "createBlock") is Kind.BLOCK
    assert detect_kind({}, "block") is Kind.BLOCK
    err = rejected(envelope(block_values()), "createThing")
    assert err.problems[0].path == "action"
    assert "createBlock" in err.problems[0].message


CLUSTER: dict[str, Any] = {
    "id": "lab-cluster-1",
    "regionId": "eu-west",
    "status": "live",
    "nodes": {
        "count": 1,
        "nodeData": [
            {
                "id": "n1",
                "gpus": {"count": 1, "memory": 24576, "gpus": [{"modelName": "RTX 4090", "memory": 24576}]},
                "vcpus": {"count": 16},
                "memory": 65536,
                "swap": 0,
                "storage": {"disks": 1, "size": 1000000},
                "network": {"interfaces": 1, "txBandwidth": 1000, "rxBandwidth": 1000},
            }
        ],
    },
    "gpus": {"count": 1, "memory": 24576},
    "vcpus": {"count": 16},
    "memory": 65536,
    "config": {"policyExecutionMode": "local", "publicHostname": "lab1.example.net", "useGateway": True},
    "tags": ["gpu"],
    "clusterMetadata": {"name": "lab", "vendor": "acme", "additionalInfo": {}},
    "reputation": 0,
}


def test_cluster_parses_and_checks_nodes() -> None:
    parsed = parse_document(envelope(CLUSTER))
    assert isinstance(parsed, ParsedCluster)
    assert parsed.key == "lab-cluster-1"
    assert parsed.spec.nodes.node_data[0].gpus.gpus[0].model_name == "RTX 4090"
    bad = copy.deepcopy(CLUSTER)
    bad["nodes"]["nodeData"][0]["gpus"]["count"] = 2
    bad["nodes"]["nodeData"].append({"id": "n1", "clusterId": "other"})
    err = rejected(envelope(bad))
    assert set(err.paths) == {
        "body.spec.values.nodes.nodeData[0].gpus.count",
        "body.spec.values.nodes.nodeData[1].id",
        "body.spec.values.nodes.nodeData[1].clusterId",
    }
    bad2 = copy.deepcopy(CLUSTER)
    bad2["config"]["policyExecutionMode"] = "anywhere"
    assert rejected(envelope(bad2)).paths == ["body.spec.values.config.policyExecutionMode"]


def test_node_parses() -> None:
    parsed = parse_document(envelope({"id": "n2", "clusterId": "c1", "vcpus": {"count": 8}, "memory": 1024}))
    assert isinstance(parsed, ParsedNode)
    assert parsed.key == "n2"
    err = rejected(envelope({"id": "n2", "clusterId": "c1", "memory": -1}))
    assert err.paths == ["body.spec.values.memory"]


def test_mgmt_needs_exactly_one_target_and_a_known_service() -> None:
    ok = parse_document(
        envelope({"blockId": "b1", "service": "instances", "mgmtCommand": "reset", "mgmtData": {}})
    )
    assert isinstance(ok, ParsedMgmt)
    assert ok.spec.target == ("block", "b1")
    both = {"blockId": "b1", "clusterId": "c", "service": "instances", "mgmtCommand": "x"}
    assert "exactly one" in rejected(envelope(both)).problems[0].message
    bad = {"clusterId": "c", "service": "instances", "mgmtCommand": "x"}
    err = rejected(envelope(bad))
    assert err.paths == ["body.spec.values.service"]
    assert "stability_checker" in err.problems[0].message


def test_search_both_forms_and_filter_errors_have_paths() -> None:
    q = {"clusterQuery": {"variable": "gpus.count", "operator": ">", "value": "1"}}
    bare = parse_document(envelope(q))
    wrapped = parse_document(envelope({"matchType": "cluster", "filter": q}))
    assert isinstance(bare, ParsedSearch) and isinstance(wrapped, ParsedSearch)
    rec = {"gpus": {"count": 2}}
    assert bare.query.predicate("clusterQuery")(rec)
    assert wrapped.query.predicate("clusterQuery")(rec)
    err = rejected(envelope({"clusterQuery": {"variable": "a", "operator": "~", "value": 1}}))
    assert err.paths == ["body.spec.values.clusterQuery.operator"]
    err = rejected(envelope({"filter": {"clusterQuery": {"variable": "a", "operator": "~", "value": 1}}}))
    assert err.paths == ["body.spec.values.filter.clusterQuery.operator"]


VDAG: dict[str, Any] = {
    "vdagName": "plate-pipeline",
    "vdagVersion": {"version": "0.1.0", "release-tag": "beta"},
    "nodes": [
        {"nodeLabel": "detect", "nodeType": "block", "manualBlockId": "car-detector-01"},
        {
            "nodeLabel": "read",
            "assignmentPolicyRule": {"policyRuleURI": "policies.assign.lowest-latency:v1", "parameters": {}},
            "postprocessingPolicyRule": {
                "policyRuleURI": "policies.post.redact:v1",
                "executionMode": "local",
            },
        },
    ],
    "graph": {
        "connections": [{"nodeLabel": "read", "inputs": [{"nodeLabel": "detect"}]}],
        "inputs": [{"nodeLabel": "detect"}],
        "outputs": [{"nodeLabel": "read"}],
    },
}


def test_vdag_doc_form_parses_and_rules_are_checked() -> None:
    parsed = parse_document(envelope(VDAG))
    assert parsed.key == "plate-pipeline:0.1.0-beta"
    bad = copy.deepcopy(VDAG)
    bad["nodes"][1].pop("assignmentPolicyRule")
    bad["nodes"].append({"nodeLabel": "detect", "nodeType": "vdag"})
    bad["graph"]["outputs"] = [{"nodeLabel": "nowhere"}]
    err = rejected(envelope(bad))
    assert set(err.paths) == {
        "body.spec.values.nodes[1]",
        "body.spec.values.nodes[2].nodeLabel",
        "body.spec.values.nodes[2].vdagURI",
        "body.spec.values.graph.outputs[0].nodeLabel",
    }


def test_documents_stream_forms() -> None:
    one = json.dumps(envelope(block_values()))
    assert len(parse_documents(one)) == 1
    assert len(parse_documents(f"[{one}, {one}]")) == 2
    assert len(parse_documents(f"{one}\n{one}{one}")) == 3
    assert len(parse_documents(one.encode())) == 1


def test_documents_errors_name_the_document() -> None:
    good = json.dumps(envelope(block_values()))
    bad_values = block_values()
    bad_values["minInstances"] = -3
    bad = json.dumps(envelope(bad_values))
    err = pytest.raises(SpecError, parse_documents, f"{good}\n{bad}").value
    assert err.paths == ["documents[1].body.spec.values.minInstances"]
    err = pytest.raises(SpecError, parse_documents, good + '\n{"header": ').value
    assert err.paths == ["documents[1]"]
    assert "line 2" in err.problems[0].message
    assert (
        pytest.raises(SpecError, parse_documents, "  ")
        .value.problems[0]
        .message.startswith("the input holds no")
    )
    assert "nested too deeply" in str(pytest.raises(SpecError, parse_documents, "[" * 100_000).value)
    assert "not UTF-8" in str(pytest.raises(SpecError, parse_documents, b"\xff\xfe{").value)


def test_many_problems_are_capped_in_the_message() -> None:
    err = SpecError([Problem(f"a[{i}]", "bad") for i in range(50)])
    lines = str(err).splitlines()
    assert len(lines) == MAX_PROBLEMS_SHOWN + 1
    assert lines[-1] == "... and 30 more problems"
    assert isinstance(err, ValueError)
