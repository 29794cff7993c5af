"""The protocol mini-language, and block resolution against a component's protocols and policies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aiosd.policies import builtin_registry
from aiosd.specs import (
    ParsedBlock,
    ParsedComponent,
    SpecError,
    check_value,
    parse_document,
    parse_protocol,
    resolve_block,
)

PROTO = parse_protocol(
    {
        "name": {"type": "string", "pattern": "^[a-z]+$", "max_length": 5},
        "code": {"type": "string", "length": 2},
        "n": {"type": "number", "min": 1, "max": 16},
        "k": {"type": "integer", "choices": [1, 2, 4]},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "max_length": 2},
        "box": {
            "type": "object",
            "properties": {"x": {"type": "number", "min": 0}, "y": {"type": "number"}},
            "required": ["x"],
        },
        "anything": {"type": "any"},
        "must": {"type": "string", "required": True},
    },
    "p",
)


@pytest.mark.parametrize(
    ("value", "path", "text"),
    [
        ({"name": 3}, "v.name", "must be a string, got a number"),
        ({"name": "ABC"}, "v.name", "must match the pattern"),
        ({"name": "abcdef"}, "v.name", "length <= 5"),
        ({"code": "abc"}, "v.code", "must have length 2"),
        ({"n": 0}, "v.n", "must be >= 1"),
        ({"n": 17.5}, "v.n", "must be <= 16"),
        ({"n": True}, "v.n", "must be a number, got a boolean"),
        ({"n": float("nan")}, "v.n", "must be a finite number"),
        ({"k": float("inf")}, "v.k", "must be a finite integer"),
        ({"k": 3}, "v.k", "must be one of [1, 2, 4]"),
        ({"k": 2.5}, "v.k", "must be an integer"),
        ({"flag": 1}, "v.flag", "must be true or false"),
        ({"tags": ["a", 1]}, "v.tags[1]", "must be a string"),
        ({"tags": ["a", "b", "c"]}, "v.tags", "length <= 2"),
        ({"box": {"y": 1}}, "v.box.x", "is required"),
        ({"box": {"x": -1}}, "v.box.x", "must be >= 0"),
        ({"box": []}, "v.box", "must be an object"),
    ],
)
def test_value_problems_name_the_path(value: dict[str, Any], path: str, text: str) -> None:
    problems = check_value(PROTO, {"must": "x", **value}, "v")
    assert [p.path for p in problems] == [path]
    assert text in problems[0].message


def test_valid_values_and_unknown_keys() -> None:
    good = {
        "must": "x",
        "name": "ab",
        "code": "zz",
        "n": 4,
        "k": 4,
        "flag": False,
        "tags": ["a"],
        "box": {"x": 0, "y": -2, "z": "extra"},
        "anything": [1, {"a": None}],
        "other": 1,
    }
    assert check_value(PROTO, good, "v") == []
    problems = check_value(PROTO, good, "v", allow_unknown=False)
    assert [p.path for p in problems] == ["v.box.z", "v.other"]
    assert [p.path for p in check_value(PROTO, {}, "v")] == ["v.must"]


@pytest.mark.parametrize(
    ("raw", "path", "text"),
    [
        ({"a": "string"}, "p.a", "must be a field spec object"),
        ({"a": {"type": "text"}}, "p.a.type", "must be one of"),
        ({"a": {"min": "1"}}, "p.a.min", "must be a finite number"),
        ({"a": {"min": 5, "max": 1}}, "p.a.max", "must be >= min (5)"),
        ({"a": {"pattern": "("}}, "p.a.pattern", "not a valid regular expression"),
        ({"a": {"length": -1}}, "p.a.length", "integer >= 0"),
        ({"a": {"choices": []}}, "p.a.choices", "non-empty list"),
        (
            {"a": {"type": "object", "properties": {"x": {}}, "required": ["y"]}},
            "p.a.required[0]",
            "not in properties",
        ),
        ({"a": {"required": "yes"}}, "p.a.required", "true/false"),
        ({"a": {"items": {"type": 1}}}, "p.a.items.type", "must be one of"),
        ([], "p", "must be an object mapping field names"),
    ],
)
def test_malformed_protocols_are_rejected_with_paths(raw: object, path: str, text: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_protocol(raw, "p")
    assert err.value.problems[0].path == path
    assert text in err.value.problems[0].message


def test_nesting_is_bounded() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"type": "object", "properties": {"x": deep}}
    with pytest.raises(SpecError, match="nested deeper"):
        parse_protocol({"root": deep}, "p")


def _component(**extra: Any) -> dict[str, Any]:
    values = {
        "componentId": {"name": "plate-reader", "version": "1.2.0", "releaseTag": "beta"},
        "componentType": "model",
        "containerRegistryInfo": {"containerImage": "reg/ocr:1.2.0", "componentMode": "third-party"},
        "componentInitData": {"weights": "/models/plate.onnx", "device": "cpu"},
        "componentInitSettingsProtocol": {"batch_size": {"type": "number", "min": 1, "max": 16}},
        "componentInitParametersProtocol": {"threshold": {"type": "number", "min": 0, "max": 1}},
        "componentInitSettings": {"batch_size": 4},
        "componentParameters": {"threshold": 0.6},
        "policies": {
            "loadBalancer": {"policyRuleURI": "policy.loadBalancer.round-robin:v1", "parameters": {}},
            "autoscaler": {
                "values": {"policyRuleURI": "policy.autoscaler.queue:v1", "parameters": {"max_queue": 5}}
            },
            "resource_affinity": {"nodeType": "gpu", "minMemory": "4GB"},
        },
    }
    values.update(extra)
    return {"header": {"templateUri": "Parser/V1"}, "body": {"spec": {"values": values}}}


def _block(**extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "blockComponentURI": "model.plate-reader:1.2.0-beta",
        "minInstances": 1,
        "maxInstances": 4,
        "blockInitData": {"device": "cuda"},
        "initSettings": {"batch_size": 8},
        "policyRulesSpec": [
            {"values": {"name": "loadBalancer", "policyRuleURI": "policy.loadBalancer.session-sticky:v1"}},
            {
                "values": {
                    "name": "stabilityChecker",
                    "policyRuleURI": "policy.health.retry:v1",
                    "parameters": {"unhealthy_threshold": 2},
                }
            },
        ],
    }
    values.update(extra)
    return {"header": {"templateUri": "Parser/V1"}, "body": {"spec": {"values": values}}}


def _pair(comp: dict[str, Any], block: dict[str, Any]) -> tuple[ParsedBlock, ParsedComponent]:
    c, b = parse_document(comp), parse_document(block)
    assert isinstance(c, ParsedComponent) and isinstance(b, ParsedBlock)
    return b, c


def test_block_policies_replace_by_name_and_add_new_ones() -> None:
    b, c = _pair(_component(), _block())
    assert c.spec.mode == "third_party"
    r = resolve_block(b, c, catalog=builtin_registry())
    assert {n: (s.uri, s.source) for n, s in r.policies.items()} == {
        "loadBalancer": ("policy.loadBalancer.session-sticky:v1", "block"),
        "autoscaler": ("policy.autoscaler.queue:v1", "component"),
        "stabilityChecker": ("policy.health.retry:v1", "block"),
    }
    assert r.policies["autoscaler"].parameters == {"max_queue": 5}
    assert r.init_data == {"weights": "/models/plate.onnx", "device": "cuda"}
    assert r.settings == {"batch_size": 8}
    assert r.parameters == {"threshold": 0.6}
    assert r.block_id is None


def test_block_values_are_checked_against_component_protocols() -> None:
    b, c = _pair(_component(), _block(initSettings={"batch_size": 99}, parameters={"threshold": "high"}))
    with pytest.raises(SpecError) as err:
        resolve_block(b, c)
    assert set(err.value.paths) == {
        "body.spec.values.initSettings.batch_size",
        "body.spec.values.parameters.threshold",
    }


def test_component_defaults_are_checked_when_the_component_is_parsed() -> None:
    with pytest.raises(SpecError) as err:
        parse_document(_component(componentParameters={"threshold": 2}))
    assert err.value.paths == ["body.spec.values.componentParameters.threshold"]
    with pytest.raises(SpecError) as err:
        parse_document(_component(componentInputProtocol={"img": {"type": "blob"}}))
    assert err.value.paths == ["body.spec.values.componentInputProtocol.img.type"]
    bad_policy = copy.deepcopy(_component())
    bad_policy["body"]["spec"]["values"]["policies"]["loadBalancer"]["policyRuleURI"] = "no version"
    with pytest.raises(SpecError) as err:
        parse_document(bad_policy)
    assert err.value.paths == ["body.spec.values.policies.loadBalancer.policyRuleURI"]


def test_policy_parameters_are_checked_against_the_policy() -> None:
    block = _block()
    block["body"]["spec"]["values"]["policyRulesSpec"][1]["values"]["parameters"] = {"unhealthy_threshold": 0}
    b, c = _pair(_component(), block)
    with pytest.raises(SpecError) as err:
        resolve_block(b, c, catalog=builtin_registry())
    assert err.value.paths == ["body.spec.values.policyRulesSpec[1].values.parameters.unhealthy_threshold"]


def test_cluster_allocator_filter_is_compiled_at_resolve_time() -> None:
    block = _block()
    block["body"]["spec"]["values"]["policyRulesSpec"].append(
        {
            "values": {
                "name": "clusterAllocator",
                "policyRuleURI": "policy.clusterAllocator.filter:v1",
                "parameters": {"filter": {"clusterQuery": {"variable": "x", "operator": "=~", "value": 1}}},
            }
        }
    )
    b, c = _pair(_component(), block)
    with pytest.raises(SpecError) as err:
        resolve_block(b, c, catalog=builtin_registry())
    assert err.value.paths == [
        "body.spec.values.policyRulesSpec[2].values.parameters.filter.clusterQuery.operator"
    ]


def test_component_policy_unknown_uri_names_the_component() -> None:
    comp = _component()
    comp["body"]["spec"]["values"]["policies"]["autoscaler"]["values"]["policyRuleURI"] = "policy.nope:v1"
    b, c = _pair(comp, _block())
    with pytest.raises(SpecError) as err:
        resolve_block(b, c, catalog=builtin_registry())
    assert err.value.paths == ["component model.plate-reader:1.2.0-beta: policies.autoscaler.policyRuleURI"]


def test_unknown_slot_names_are_kept_with_a_warning() -> None:
    block = _block()
    block["body"]["spec"]["values"]["policyRulesSpec"][0]["values"]["name"] = "loadBalancr"
    b, c = _pair(_component(), block)
    r = resolve_block(b, c, catalog=builtin_registry())
    assert "loadBalancr" in r.policies
    [w] = r.warnings
    assert w.path == "body.spec.values.policyRulesSpec[0].values.name"
    assert "not a slot the system reads" in w.message and "loadBalancer" in w.message


def test_block_must_name_the_component_given() -> None:
    b, c = _pair(_component(), _block(blockComponentURI="model.other:1.0.0-beta"))
    with pytest.raises(SpecError, match="blockComponentURI"):
        resolve_block(b, c)
