"""Every module of specs/filters/policies/control imports alone (no cycles); public surfaces are pinned."""

from __future__ import annotations

import pathlib

import aiosd.controller
import aiosd.policies
import aiosd.specs
import aiosd.specs.filters
from tests.imports import assert_each_imports_alone

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("aiosd/specs", "aiosd/policies", "aiosd/control")


def _modules() -> list[str]:
    names = ["aiosd.specs.filters"]
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            names.append(".".join(parts))
    return names


def test_each_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = _modules()
    assert len(modules) > 20
    assert_each_imports_alone(modules, timeout_s=60)


def test_public_surfaces_are_pinned() -> None:
    assert sorted(aiosd.specs.__all__) == sorted(
        [
            "ACTIONS",
            "BlockSpec",
            "ClusterSpec",
            "ComponentSpec",
            "Envelope",
            "FieldSpec",
            "Kind",
            "MgmtSpec",
            "NodeSpec",
            "PARSER_V1",
            "ParsedBlock",
            "ParsedCluster",
            "ParsedComponent",
            "ParsedMgmt",
            "ParsedNode",
            "ParsedSearch",
            "ParsedSpec",
            "ParsedVdag",
            "PolicyCatalog",
            "PolicyInfo",
            "PolicySlot",
            "Problem",
            "Protocol",
            "ResolvedBlock",
            "SearchSpec",
            "SpecError",
            "VdagSpec",
            "check_value",
            "detect_kind",
            "parse_document",
            "parse_documents",
            "parse_protocol",
            "read_envelope",
            "resolve_block",
            "split_documents",
        ]
    )
    assert sorted(aiosd.specs.filters.__all__) == sorted(
        [
            "CompositeQuery",
            "FilterError",
            "LOGICAL_OPERATORS",
            "OPERATORS",
            "Predicate",
            "QUERY_SCOPES",
            "Record",
            "compile_filter",
            "compile_query",
        ]
    )
    assert sorted(aiosd.policies.__all__) == sorted(
        [
            "AIOSv1PolicyRule",
            "AIOS_EXAMPLE_OVERRIDES",
            "PolicyConfigError",
            "PolicyEntry",
            "PolicyError",
            "PolicyFailed",
            "PolicyHandle",
            "PolicyInputError",
            "PolicyNotFound",
            "PolicyOutputError",
            "PolicyRegistry",
            "PolicyRunner",
            "builtin_registry",
        ]
    )
    assert sorted(aiosd.controller.__all__) == sorted(
        [
            "Assignment",
            "Candidate",
            "GpuView",
            "NodeView",
            "Placement",
            "PlacementError",
            "PlacementResult",
            "capacity",
            "node_state",
            "place",
        ]
    )
    for mod in (aiosd.specs, aiosd.specs.filters, aiosd.policies, aiosd.controller):
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


def test_errors_fit_the_daemon_tree() -> None:
    from aiosd.controller import PlacementError
    from aiosd.errors import AiosdError
    from aiosd.policies import PolicyError, PolicyNotFound
    from aiosd.specs import SpecError
    from aiosd.specs.filters import FilterError

    assert issubclass(SpecError, AiosdError) and issubclass(SpecError, ValueError)
    assert issubclass(FilterError, SpecError)
    assert issubclass(PolicyError, AiosdError) and issubclass(PolicyNotFound, LookupError)
    assert issubclass(PlacementError, AiosdError)
