"""The policy registry, the override mapping, and the runner seam's contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from aiosd.policies import (
    AIOS_EXAMPLE_OVERRIDES,
    AIOSv1PolicyRule,
    PolicyConfigError,
    PolicyFailed,
    PolicyNotFound,
    PolicyOutputError,
    PolicyRegistry,
    PolicyRunner,
    builtin_registry,
)
from aiosd.specs import SpecError

BRIEF_URIS = {
    "policy.resourceAllocator.best-fit:v1",
    "policy.resourceAllocator.cpu:v1",
    "policy.loadBalancer.round-robin:v1",
    "policy.loadBalancer.least-outstanding:v1",
    "policy.loadBalancer.session-sticky:v1",
    "policy.autoscaler.queue:v1",
    "policy.autoscaler.utilization:v1",
    "policy.health.retry:v1",
    "policy.quota.per-session:v1",
    "policy.clusterAllocator.filter:v1",
}


class Echo(AIOSv1PolicyRule):
    """Returns what it was configured with, so tests can see the merge order."""

    parameters_protocol: ClassVar[Mapping[str, Any]] = {"level": {"type": "integer", "min": 0}}

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        if input_data.get("explode"):
            raise RuntimeError("boom")
        if input_data.get("bad_output"):
            return [1]  # type: ignore[return-value]  # deliberately outside the contract
        return {"parameters": dict(parameters), "settings": dict(self.settings), "context": context}


def _registry() -> PolicyRegistry:
    reg = PolicyRegistry()
    reg.register(
        "test.echo:v1", Echo, default_parameters={"level": 1, "keep": "d"}, default_settings={"s": "d"}
    )
    return reg


def test_builtins_cover_the_brief() -> None:
    assert set(builtin_registry().known_uris()) == BRIEF_URIS


def test_lookup_of_unknown_uri_lists_what_exists() -> None:
    with pytest.raises(PolicyNotFound) as err:
        builtin_registry().lookup("policy.loadBalancer.magic:v9")
    msg = str(err.value)
    assert "'policy.loadBalancer.magic:v9' is not registered" in msg
    for uri in BRIEF_URIS:
        assert uri in msg
    assert isinstance(err.value, LookupError)


def test_every_override_points_at_a_builtin() -> None:
    reg = builtin_registry(AIOS_EXAMPLE_OVERRIDES)
    for requested, target in AIOS_EXAMPLE_OVERRIDES.items():
        entry = reg.lookup(requested)
        assert entry.uri == target
    with pytest.raises(SpecError, match="not registered"):
        builtin_registry({"a.b:v1": "policy.nope:v1"})
    assert "policy.rr:v1" not in builtin_registry()
    assert "policy.loadBalancer.rr:v1" in reg


def test_register_rejects_bad_and_duplicate_uris() -> None:
    reg = _registry()
    with pytest.raises(ValueError, match="name:version"):
        reg.register("no-version", Echo)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("test.echo:v1", Echo)


def test_caller_configuration_overrides_stored_defaults() -> None:
    # AIOS's sandbox let stored defaults win; the documented rule is the caller wins.
    runner = PolicyRunner(_registry())
    handle = runner.load("test.echo:v1", parameters={"level": 5}, settings={"s": "caller"})
    out = handle.eval({}, context="ctx")
    assert out == {"parameters": {"level": 5, "keep": "d"}, "settings": {"s": "caller"}, "context": "ctx"}
    # Per-call parameters override the loaded ones, for that call only.
    assert handle.eval({}, parameters={"level": 9})["parameters"]["level"] == 9
    assert handle.eval({})["parameters"]["level"] == 5
    assert runner.run("test.echo:v1", {})["parameters"] == {"level": 1, "keep": "d"}


def test_runner_wraps_policy_faults() -> None:
    runner = PolicyRunner(_registry())
    with pytest.raises(PolicyConfigError) as cfg:
        runner.load("test.echo:v1", parameters={"level": -1})
    assert cfg.value.problems[0].path == "parameters.level"
    handle = runner.load("test.echo:v1")
    with pytest.raises(PolicyFailed, match="RuntimeError: boom"):
        handle.eval({"explode": True})
    with pytest.raises(PolicyOutputError, match="expected a JSON object, got list"):
        handle.eval({"bad_output": True})
    assert handle.management("get_config", {})["parameters"]["level"] == 1
    assert handle.management("nope", {})["ok"] is False


def test_handles_keep_state_apart() -> None:
    runner = PolicyRunner(builtin_registry())
    a = runner.load("policy.loadBalancer.round-robin:v1")
    b = runner.load("policy.loadBalancer.round-robin:v1")
    data = {"mode": "load_balance", "packet": {}, "instances": ["i1", "i2"]}
    assert [a.eval(data)["instance_id"] for _ in range(3)] == ["i1", "i2", "i1"]
    assert b.eval(data)["instance_id"] == "i1"
