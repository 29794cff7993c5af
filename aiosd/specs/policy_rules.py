"""A component's policy entries: the runnable ones (with a policyRuleURI) and the hints.

Shared by the parser (which checks them) and the resolver (which lays block policies over them).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from aiosd.specs.base import POLICY_URI_RE, PolicyRuleValues, WrappedPolicyRule
from aiosd.specs.component import ComponentSpec
from aiosd.specs.errors import Problem, join_path, problems_from_validation


def component_policies(comp: ComponentSpec) -> tuple[dict[str, PolicyRuleValues], dict[str, Any]]:
    """Split a component's `policies` into runnable slots (with a policyRuleURI) and hints (without)."""
    slots: dict[str, PolicyRuleValues] = {}
    hints: dict[str, Any] = {}
    for name, entry in comp.policies.items():
        raw = entry.get("values", entry) if isinstance(entry, dict) else entry
        if isinstance(raw, dict) and raw.get("policyRuleURI"):
            try:
                if "values" in entry:
                    slots[name] = WrappedPolicyRule.model_validate(entry).values
                else:
                    slots[name] = PolicyRuleValues.model_validate(entry)
            except ValidationError:
                hints[name] = entry  # component_policy_problems reports it
        else:
            hints[name] = entry
    return slots, hints


def component_policy_problems(comp: ComponentSpec, path: str) -> list[Problem]:
    """Problems with a component's runnable policy entries (hints without a URI are not checked)."""
    out: list[Problem] = []
    for name, entry in comp.policies.items():
        raw = entry.get("values", entry) if isinstance(entry, dict) else entry
        if not (isinstance(raw, dict) and "policyRuleURI" in raw):
            continue
        base = join_path(path, name)
        try:
            if isinstance(entry, dict) and "values" in entry:
                WrappedPolicyRule.model_validate(entry)
            else:
                PolicyRuleValues.model_validate(entry)
        except ValidationError as exc:
            out.extend(problems_from_validation(exc, base))
            continue
        uri = raw.get("policyRuleURI")
        if isinstance(uri, str) and not POLICY_URI_RE.match(uri):
            out.append(Problem(join_path(base, "policyRuleURI"), "must be a string like name:version"))
    return out


__all__ = ["component_policies", "component_policy_problems"]
