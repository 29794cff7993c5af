"""Fuzz: generated and mutated spec documents only ever fail with a SpecError that names a path."""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosd.policies import AIOS_EXAMPLE_OVERRIDES, PolicyError, PolicyRunner, builtin_registry
from aiosd.specs import (
    ParsedBlock,
    ParsedComponent,
    SpecError,
    parse_document,
    parse_documents,
    resolve_block,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO.parent / "shared" / "reference" / "aios-examples"
if not EXAMPLES.is_dir():
    EXAMPLES = pathlib.Path("/work/shared/reference/aios-examples")
DOCS: list[Any] = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))] + [
    json.loads((REPO / "examples" / "echo" / n).read_text()) for n in ("component.json", "block.json")
]
COMPONENTS = {d.key: d for d in (parse_document(x) for x in DOCS) if isinstance(d, ParsedComponent)}
REGISTRY = builtin_registry(AIOS_EXAMPLE_OVERRIDES)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        ["Parser/V1", "model.echo:1.0.0-stable", "policy.health.retry:v1", "==", "IN", "AND", ""]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.text(max_size=8),
                st.sampled_from(
                    [
                        "values",
                        "spec",
                        "body",
                        "header",
                        "nodes",
                        "id",
                        "policyRuleURI",
                        "variable",
                        "conditions",
                    ]
                ),
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


def _check(exc: SpecError) -> None:
    assert exc.problems
    for p in exc.problems:
        assert p.path, f"problem without a path: {p}"
        assert p.message
    assert str(exc)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, data: st.DataObject) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths[1:] if len(paths) > 1 else paths))
        if not path:
            return data.draw(json_values)
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        op = data.draw(st.sampled_from(["replace", "delete", "wrap"]))
        key = path[-1]
        if op == "replace":
            parent[key] = data.draw(json_values)
        elif op == "delete":
            del parent[key]
        else:
            parent[key] = [parent[key]]
    return doc


@FUZZ
@given(doc=json_values)
def test_generated_documents_fail_only_with_spec_error(doc: Any) -> None:
    for candidate in (doc, {"header": {"templateUri": "Parser/V1"}, "body": {"spec": {"values": doc}}}):
        try:
            parse_document(candidate)
        except SpecError as exc:
            _check(exc)


@FUZZ
@given(data=st.data())
def test_mutated_example_documents_fail_only_with_spec_error(data: st.DataObject) -> None:
    doc = _mutate(data.draw(st.sampled_from(DOCS)), data)
    try:
        parsed = parse_document(doc)
    except SpecError as exc:
        _check(exc)
        return
    if isinstance(parsed, ParsedBlock):
        comp = COMPONENTS.get(parsed.spec.block_component_uri)
        if comp is None:
            return
        try:
            resolved = resolve_block(parsed, comp, catalog=REGISTRY)
        except SpecError as exc:
            _check(exc)
            return
        # A block that resolved must also load its policies: the catalog check is the same one.
        runner = PolicyRunner(REGISTRY)
        for slot in resolved.policies.values():
            try:
                runner.load(slot.uri, parameters=slot.parameters, settings=slot.settings)
            except PolicyError as exc:  # pragma: no cover - a failure here is a bug the fuzz found
                raise AssertionError(f"resolved block's policy {slot.name} did not load: {exc}") from exc


@FUZZ
@given(text=st.text(max_size=200), data=st.data())
def test_text_streams_fail_only_with_spec_error(text: str, data: st.DataObject) -> None:
    good = json.dumps(data.draw(st.sampled_from(DOCS)))
    for candidate in (text, good + text, text + good):
        try:
            parse_documents(candidate)
        except SpecError as exc:
            _check(exc)
