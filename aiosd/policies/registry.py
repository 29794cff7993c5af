"""The policy registry: URIs -> policy classes with their default configuration and protocols.

`builtin_registry()` holds the built-ins. `AIOS_EXAMPLE_OVERRIDES` is the documented mapping that
points the policy URIs used by the AIOS example specs (which name policies that exist nowhere)
at the built-ins; pass it (or your own mapping) as `overrides` to apply those specs here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiosd.policies.builtin import BUILTINS
from aiosd.policies.contract import AIOSv1PolicyRule
from aiosd.policies.errors import PolicyNotFound
from aiosd.specs.base import POLICY_URI_RE
from aiosd.specs.errors import Problem, SpecError, join_path
from aiosd.specs.protocol import Protocol, check_value, parse_protocol


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    """A registered policy: its URI, class, default configuration and compiled protocols."""

    uri: str
    factory: type[AIOSv1PolicyRule]
    default_parameters: Mapping[str, Any] = field(default_factory=dict)
    default_settings: Mapping[str, Any] = field(default_factory=dict)
    parameters_protocol: Protocol = field(default_factory=lambda: Protocol(fields={}))
    settings_protocol: Protocol = field(default_factory=lambda: Protocol(fields={}))
    description: str = ""

    def check_config(
        self, parameters: Mapping[str, Any], settings: Mapping[str, Any], path: str
    ) -> list[Problem]:
        """Problems with a slot's parameters/settings, paths under `path`.parameters / `path`.settings."""
        ppath, spath = join_path(path, "parameters"), join_path(path, "settings")
        out = check_value(self.parameters_protocol, dict(parameters), ppath)
        out += check_value(self.settings_protocol, dict(settings), spath)
        if not out:
            out += self.factory.check_config(parameters, settings, path)
        return out


class PolicyRegistry:
    """Policies by URI, with an optional override mapping (requested URI -> registered URI)."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self._entries: dict[str, PolicyEntry] = {}
        self.overrides: dict[str, str] = dict(overrides or {})

    def register(
        self,
        uri: str,
        factory: type[AIOSv1PolicyRule],
        *,
        default_parameters: Mapping[str, Any] | None = None,
        default_settings: Mapping[str, Any] | None = None,
    ) -> PolicyEntry:
        """Register a policy class; its protocols come from the class attributes.

        Raises:
            ValueError: a malformed or already registered URI.
            SpecError: the class's protocols are malformed.
        """
        if not POLICY_URI_RE.match(uri):
            raise ValueError(f"policy URI must look like name:version, got {uri!r}")
        if uri in self._entries:
            raise ValueError(f"policy {uri!r} is already registered")
        entry = PolicyEntry(
            uri=uri,
            factory=factory,
            default_parameters=dict(default_parameters or {}),
            default_settings=dict(default_settings or {}),
            parameters_protocol=parse_protocol(
                dict(factory.parameters_protocol), f"{uri}.parameters_protocol"
            ),
            settings_protocol=parse_protocol(dict(factory.settings_protocol), f"{uri}.settings_protocol"),
            description=factory.description,
        )
        self._entries[uri] = entry
        return entry

    def find(self, uri: str) -> PolicyEntry | None:
        """The entry `uri` names (following one override hop), or None."""
        return self._entries.get(self.overrides.get(uri, uri))

    def lookup(self, uri: str) -> PolicyEntry:
        """Like `find`, but raises.

        Raises:
            PolicyNotFound: listing every registered URI.
        """
        entry = self.find(uri)
        if entry is None:
            raise PolicyNotFound(uri, self.known_uris())
        return entry

    def known_uris(self) -> list[str]:
        return sorted(self._entries)

    def with_overrides(self, overrides: Mapping[str, str]) -> PolicyRegistry:
        """A registry with the same entries and `overrides` added to the mapping.

        Raises:
            SpecError: an override points at a URI that is not registered.
        """
        bad = [
            Problem(k, f"points at {v!r}, which is not registered")
            for k, v in overrides.items()
            if v not in self._entries
        ]
        if bad:
            raise SpecError(bad)
        out = PolicyRegistry({**self.overrides, **overrides})
        out._entries = dict(self._entries)
        return out

    def __contains__(self, uri: object) -> bool:
        return isinstance(uri, str) and self.find(uri) is not None


def builtin_registry(overrides: Mapping[str, str] | None = None) -> PolicyRegistry:
    """A registry holding every built-in policy, plus `overrides` (e.g. `AIOS_EXAMPLE_OVERRIDES`)."""
    reg = PolicyRegistry()
    for uri, cls in BUILTINS.items():
        reg.register(uri, cls)
    return reg.with_overrides(overrides) if overrides else reg


# The AIOS example specs (reference/aios-examples, aios.md §2) name policies that were never
# published. This maps each of them to the built-in that does the same job.
AIOS_EXAMPLE_OVERRIDES: Mapping[str, str] = {
    # clusterAllocator: filter clusters by clusterQuery/clusterMetricsQuery, keep max_candidates
    "policy.clusterAllocator.llm-cluster-selector:v1": "policy.clusterAllocator.filter:v1",
    "policy.clusterAllocator.default-selector:v1": "policy.clusterAllocator.filter:v1",
    "policy.clusterAllocator.yolo-cluster-selector:v1": "policy.clusterAllocator.filter:v1",
    "policy.clusterAllocator.basic:v1": "policy.clusterAllocator.filter:v1",
    # resourceAllocator: GPU best-fit (gpus, min_gpu_free_memory, max_gpu_utilization) or CPU-only
    "policy.resourceAllocator.multi-gpu-llm:v0.1.0": "policy.resourceAllocator.best-fit:v1",
    "policy.resourceAllocator.yolo-gpu-scheduler:v0.0.1-beta": "policy.resourceAllocator.best-fit:v1",
    "policy.resourceAllocator.gpu:v1": "policy.resourceAllocator.best-fit:v1",
    "policy.resourceAllocator.cpu-only-scheduler:v1": "policy.resourceAllocator.cpu:v1",
    # loadBalancer
    "policy.loadBalancer.session-aware-llm:v0.1.0": "policy.loadBalancer.session-sticky:v1",
    "policy.loadBalancer.roundrobin:v0.0.1": "policy.loadBalancer.round-robin:v1",
    "policy.loadBalancer.rr:v1": "policy.loadBalancer.round-robin:v1",
    # stabilityChecker (per-block health)
    "policy.stabilityChecker.retry-on-fail:v0.1.0": "policy.health.retry:v1",
    "policy.stabilityChecker.unhealthy-retry:v0.0.1": "policy.health.retry:v1",
    # autoscaler
    "policy.autoscaler.large-model-autoscaler:v0.0.1": "policy.autoscaler.utilization:v1",
    "policy.autoscaler.cpu-usage-autoscaler:v1": "policy.autoscaler.utilization:v1",
    "policy.autoscaler.gpu-based-autoscaler:v0.0.01": "policy.autoscaler.utilization:v1",
    # quota (vDAG controller)
    "policies.quota.per-session:v1": "policy.quota.per-session:v1",
    "policies.quota_checkers.sample:v1-stable": "policy.quota.per-session:v1",
}


__all__ = ["AIOS_EXAMPLE_OVERRIDES", "PolicyEntry", "PolicyRegistry", "builtin_registry"]
