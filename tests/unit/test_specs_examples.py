"""Every real AIOS example spec parses; with the documented overrides its block specs validate."""

from __future__ import annotations

import json
import pathlib

import pytest

from aiosd.policies import AIOS_EXAMPLE_OVERRIDES, builtin_registry
from aiosd.specs import (
    ParsedBlock,
    ParsedComponent,
    ParsedVdag,
    SpecError,
    parse_document,
    parse_documents,
    resolve_block,
)

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "reference" / "aios-examples"
if not EXAMPLES.is_dir():  # the checkout may sit elsewhere; the shared folder is fixed
    EXAMPLES = pathlib.Path("/work/shared/reference/aios-examples")
FILES = sorted(EXAMPLES.glob("*.json"))
PAIRS = [
    ("mistral7b-vllm_block.json", "mistral7b-vllm_component.json"),
    ("mistral7b_block.json", "mistral7b_component.json"),
    ("yolov5-block_block.json", "yolov5-block_component.json"),
]
REPO = pathlib.Path(__file__).resolve().parents[2]


def _load(name: str) -> ParsedBlock | ParsedComponent:
    [doc] = parse_documents((EXAMPLES / name).read_text())
    assert isinstance(doc, ParsedBlock | ParsedComponent)
    return doc


def test_examples_folder_is_present() -> None:
    assert len(FILES) == 7


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_aios_example_parses(path: pathlib.Path) -> None:
    [doc] = parse_documents(path.read_text())
    expected = path.stem.rsplit("_", 1)[1]
    assert doc.kind == expected


def test_derived_uris() -> None:
    comp = _load("yolov5-block_component.json")
    assert isinstance(comp, ParsedComponent)
    assert comp.key == "model.object-detector:2.0.0-stable"
    [vdag] = parse_documents((EXAMPLES / "vdag-pose-estimation_vdag.json").read_text())
    assert isinstance(vdag, ParsedVdag)
    assert vdag.key == "pose-estimator:0.0.1-stable"
    assert vdag.spec.edges() == [("obj-det-1", "tracker-0")]
    assert vdag.envelope.header_key == "parser_version"


def test_head_is_accepted_for_header() -> None:
    block = _load("mistral7b_block.json")
    assert block.envelope.header_key == "head"


@pytest.mark.parametrize(("block", "component"), PAIRS)
def test_example_blocks_are_refused_without_overrides_listing_what_exists(block: str, component: str) -> None:
    b, c = _load(block), _load(component)
    assert isinstance(b, ParsedBlock) and isinstance(c, ParsedComponent)
    with pytest.raises(SpecError) as err:
        resolve_block(b, c, catalog=builtin_registry())
    # All five slots name unpublished policies; each problem says so and lists the built-ins.
    assert len(err.value.problems) == 5
    first = err.value.problems[0]
    assert first.path == "body.spec.values.policyRulesSpec[0].values.policyRuleURI"
    assert "is not registered; registered: " in first.message
    assert "policy.resourceAllocator.best-fit:v1" in first.message


@pytest.mark.parametrize(("block", "component"), PAIRS)
def test_example_blocks_validate_with_documented_overrides(block: str, component: str) -> None:
    b, c = _load(block), _load(component)
    assert isinstance(b, ParsedBlock) and isinstance(c, ParsedComponent)
    resolved = resolve_block(b, c, catalog=builtin_registry(AIOS_EXAMPLE_OVERRIDES))
    assert set(resolved.policies) == {
        "clusterAllocator",
        "resourceAllocator",
        "loadBalancer",
        "stabilityChecker",
        "autoscaler",
    }
    for slot in resolved.policies.values():
        assert slot.uri in builtin_registry().known_uris()
        assert slot.requested_uri in AIOS_EXAMPLE_OVERRIDES
    assert resolved.component_uri == c.key


def test_yolo_block_inherits_and_overrides() -> None:
    b, c = _load("yolov5-block_block.json"), _load("yolov5-block_component.json")
    assert isinstance(b, ParsedBlock) and isinstance(c, ParsedComponent)
    r = resolve_block(b, c)
    # Component defaults, block values laid over them key by key.
    assert r.parameters == {"threshold": 0.4, "top_k": 10, "confidence_threshold": 0.5, "nms_threshold": 0.4}
    assert r.settings == {"enable_tracing": True, "batch_size": 4, "timeout_ms": 1000}
    assert r.image == "registry.ai-platform.com/models/object-detector:2.0.0"
    assert r.tags == ("vision", "object-detection", "yolo", "realtime")
    # Keys the component's protocol does not name are kept, and reported as warnings.
    assert {w.path for w in r.warnings} == {
        "body.spec.values.initSettings.timeout_ms",
        "body.spec.values.parameters.confidence_threshold",
        "body.spec.values.parameters.nms_threshold",
    }
    with pytest.raises(SpecError) as err:
        resolve_block(b, c, strict=True)
    assert len(err.value.problems) == 3
    assert r.to_record()["policies"]["resourceAllocator"]["parameters"]["gpus"] == 1
    # The component's `resource_affinity` entry has no policyRuleURI: kept as a hint, never run.
    assert r.policy_hints == {"resource_affinity": {"nodeType": "gpu", "minMemory": "4GB"}}


def test_echo_example_specs_apply_against_builtins() -> None:
    comp = parse_document(json.loads((REPO / "examples" / "echo" / "component.json").read_text()))
    block = parse_document(json.loads((REPO / "examples" / "echo" / "block.json").read_text()))
    assert isinstance(comp, ParsedComponent) and isinstance(block, ParsedBlock)
    assert comp.key == "model.echo:1.0.0-stable"
    assert comp.spec.container_registry_info.container_image == "localhost/aiosd-echo:latest"
    resolved = resolve_block(block, comp, catalog=builtin_registry(), strict=True)
    assert resolved.warnings == ()
    assert resolved.policies["resourceAllocator"].uri == "policy.resourceAllocator.cpu:v1"


def test_all_examples_as_one_stream_parse_in_order() -> None:
    text = "\n".join(p.read_text() for p in FILES)
    docs = parse_documents(text)
    assert [d.kind for d in docs] == [p.stem.rsplit("_", 1)[1] for p in FILES]


def _filters(obj: object, path: str = "") -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            sub = f"{path}.{k}" if path else str(k)
            if k == "filter":
                found.append((sub, v))
            else:
                found += _filters(v, sub)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _filters(v, f"{path}[{i}]")
    return found


def test_every_filter_in_the_examples_compiles() -> None:
    from aiosd.specs.filters import QUERY_SCOPES, compile_filter, compile_query

    found = [f for p in FILES for f in _filters(json.loads(p.read_text()))]
    assert (
        len(found) == 5
    )  # 3 clusterAllocator filters, the gstreamer allocation filter, one assignment filter
    for path, flt in found:
        assert isinstance(flt, dict)
        if any(k in QUERY_SCOPES for k in flt):
            compile_query(flt, path)
        else:
            compile_filter(flt, path)
