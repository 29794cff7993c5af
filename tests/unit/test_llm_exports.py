"""sdk.llm and aiosd.llm: public surface pinned, each module imports alone, allowed imports only,
and `import sdk` stays free of torch (block images without the llm extra keep working)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import aiosd.llm
from tests.imports import assert_each_imports_alone

LLM_DIR = pathlib.Path(__file__).resolve().parents[2] / "sdk" / "llm"
MODULES = sorted(p.stem for p in LLM_DIR.glob("*.py") if p.stem != "__init__")
ALLOWED = {"aiohttp", "msgpack", "torch", "transformers", "tokenizers", "safetensors", "sdk"}


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_sdk_llm_imports_only_the_llm_extra() -> None:
    for path in LLM_DIR.glob("*.py"):
        bad = {n for n in _imports(path) if n not in sys.stdlib_module_names and n not in ALLOWED}
        assert not bad, (path.name, bad)


def test_plan_is_pure() -> None:
    plan = pathlib.Path(aiosd.llm.__file__).parent / "plan.py"
    assert _imports(plan) <= set(sys.stdlib_module_names) | {"aiosd"}
    assert "asyncio" not in _imports(plan) and "time" not in _imports(plan)


def test_import_sdk_does_not_import_torch() -> None:
    code = "import sys, sdk; assert 'torch' not in sys.modules and 'sdk.llm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_surfaces_are_pinned() -> None:
    assert set(aiosd.llm.__all__) == {"ModelProfile", "NodeCapacity", "PlanError", "SplitPlan", "StagePlan",
                                      "format_plans", "profile_from_config", "propose_plans"}
    pytest.importorskip("torch")
    import sdk.llm

    assert set(sdk.llm.__all__) == {
        "CacheMiss", "Completion", "ContextTooLong", "Delta", "EngineStopped", "Generation", "InvalidRequest",
        "LLMEngine", "LLMMetrics", "LlmError", "Message", "ModelLoadError", "OverCapacity", "SamplingParams",
        "TensorWireError", "Usage", "messages_from_obj", "sampling_from_obj"}
    assert all(hasattr(sdk.llm, n) for n in sdk.llm.__all__)


def test_every_llm_module_imports_alone() -> None:
    pytest.importorskip("torch")
    # one interpreter (torch imports in seconds on shared cores): each module is imported with every
    # sdk.llm module purged first, so none relies on another having been imported before it
    assert_each_imports_alone([f"sdk.llm.{m}" for m in MODULES])
