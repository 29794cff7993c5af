"""Loading policies from a registry and running them in this process (the seam the sandbox replaces)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiosd.policies.contract import PolicyHandle
from aiosd.policies.errors import PolicyConfigError, PolicyError, PolicyFailed
from aiosd.policies.registry import PolicyEntry, PolicyRegistry


class PolicyRunner:
    """Loads policies from a registry and runs them in this process.

    This is the seam the sandbox (separate process, time and memory limits) will replace; callers
    only use `load`, `run` and the handle's `eval` / `management`.
    """

    def __init__(self, registry: PolicyRegistry) -> None:
        self.registry = registry

    def load(
        self,
        uri: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        rule_id: str | None = None,
    ) -> PolicyHandle:
        """Instantiate the policy under `uri` (after overrides) with merged configuration.

        Raises:
            PolicyNotFound: listing the registered URIs.
            PolicyConfigError: the parameters/settings break the policy's protocols.
        """
        entry = self.registry.lookup(uri)
        return load_entry(entry, parameters, settings, rule_id)

    def run(
        self,
        uri: str,
        input_data: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        context: Any = None,
    ) -> dict[str, Any]:
        """Load and evaluate once (for stateless policies)."""
        return self.load(uri, parameters=parameters, settings=settings).eval(input_data, context)


def load_entry(
    entry: PolicyEntry,
    parameters: Mapping[str, Any] | None,
    settings: Mapping[str, Any] | None,
    rule_id: str | None,
) -> PolicyHandle:
    params = {**entry.default_parameters, **(parameters or {})}
    sets = {**entry.default_settings, **(settings or {})}
    problems = entry.check_config(params, sets, "")
    if problems:
        raise PolicyConfigError(entry.uri, problems)
    try:
        rule = entry.factory(rule_id or entry.uri, sets, params)
    except PolicyError:
        raise
    except Exception as exc:  # a constructor is policy code too
        raise PolicyFailed(entry.uri, exc) from exc
    return PolicyHandle(entry.uri, rule, params, sets)


__all__ = ["PolicyRunner", "load_entry"]
