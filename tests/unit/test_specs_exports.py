"""Every module of specs/filters/policies/control imports alone (no cycles); public surfaces are pinned."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import aiosd.controller
import aiosd.policies
import aiosd.specs
import aiosd.specs.filters

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
    script = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for name in {modules!r}:\n"
        "    for k in [k for k in sys.modules if k == 'aiosd' or k.startswith('aiosd.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        bad.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
