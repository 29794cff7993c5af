"""Shared pieces of the spec models: the model base, URI shapes, and policy-rule references.

Models keep the AIOS key names (aliases) and keep unknown keys (`extra="allow"`), because real
AIOS specs carry them; wrong types are still rejected, with the path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

# A policy rule URI is `name:version` (AIOS: `policy.kind.name:v1-stable`).
POLICY_URI_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*:[A-Za-z0-9][A-Za-z0-9_.\-+]*$")
# A component URI is `type.name:version-releaseTag` (the tag part may itself hold dashes).
COMPONENT_URI_RE = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_.\-]+:[A-Za-z0-9_.+]+-[A-Za-z0-9_.\-]+$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Why 253: the DNS name limit; ids end up in container names, labels and file names.
MAX_NAME_LEN = 253


class AiosModel(BaseModel):
    """Base of every spec model: AIOS key names, extra keys kept, types checked strictly."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        frozen=True,
        strict=True,
        validate_default=False,
        hide_input_in_errors=True,
    )


def _check_name(v: str) -> str:
    if not v or len(v) > MAX_NAME_LEN or not NAME_RE.match(v):
        raise ValueError(
            f"must be a name of letters, digits, '.', '_' or '-' (1..{MAX_NAME_LEN} chars), got {v[:60]!r}"
        )
    return v


def _check_policy_uri(v: str) -> str:
    if not POLICY_URI_RE.match(v) or len(v) > MAX_NAME_LEN:
        raise ValueError(
            f"must be a string like name:version (e.g. policy.loadBalancer.round-robin:v1), got {v[:60]!r}"
        )
    return v


def _check_optional_policy_uri(v: str) -> str:
    # vDAG specs use "" for "no policy here".
    return v if v == "" else _check_policy_uri(v)


def _check_component_uri(v: str) -> str:
    if not COMPONENT_URI_RE.match(v) or len(v) > MAX_NAME_LEN:
        raise ValueError(f"must be a component URI like type.name:version-releaseTag, got {v[:60]!r}")
    return v


Name = Annotated[str, AfterValidator(_check_name)]
PolicyUri = Annotated[str, AfterValidator(_check_policy_uri)]
OptionalPolicyUri = Annotated[str, AfterValidator(_check_optional_policy_uri)]
ComponentUri = Annotated[str, AfterValidator(_check_component_uri)]
JsonObject = dict[str, Any]


class PolicyRuleValues(AiosModel):
    """`{name, policyRuleURI, parameters, settings, executionMode}` as AIOS writes a policy slot."""

    name: str | None = None
    policy_rule_uri: OptionalPolicyUri = Field(default="", alias="policyRuleURI")
    parameters: JsonObject = Field(default_factory=dict)
    settings: JsonObject = Field(default_factory=dict)
    execution_mode: Literal["local", "central", "remote"] = Field(default="local", alias="executionMode")


class WrappedPolicyRule(AiosModel):
    """`{"@templateType": ..., "values": {...}}`: the wrapped form used in block and vDAG specs."""

    template_type: str = Field(default="", alias="@templateType")
    values: PolicyRuleValues


class AssignmentPolicyRule(AiosModel):
    """`{"assignmentType": ..., "assignmentPolicyRule": {...}}`: the vDAG example's nested form."""

    assignment_type: str = Field(default="automatic", alias="assignmentType")
    assignment_policy_rule: WrappedPolicyRule | PolicyRuleValues = Field(alias="assignmentPolicyRule")


def _policy_form(v: Any) -> str:
    if isinstance(v, dict):
        if "values" in v:
            return "<wrapped>"
        if "assignmentPolicyRule" in v:
            return "<assignment>"
    return "<flat>"


PolicyRuleRef = Annotated[
    Annotated[WrappedPolicyRule, Tag("<wrapped>")]
    | Annotated[AssignmentPolicyRule, Tag("<assignment>")]
    | Annotated[PolicyRuleValues, Tag("<flat>")],
    Discriminator(_policy_form),
]


def rule_values(ref: WrappedPolicyRule | AssignmentPolicyRule | PolicyRuleValues) -> PolicyRuleValues:
    """The `{policyRuleURI, parameters, settings}` inside any of the three written forms."""
    if isinstance(ref, WrappedPolicyRule):
        return ref.values
    if isinstance(ref, AssignmentPolicyRule):
        inner = ref.assignment_policy_rule
        return inner.values if isinstance(inner, WrappedPolicyRule) else inner
    return ref


__all__ = [
    "COMPONENT_URI_RE",
    "POLICY_URI_RE",
    "AiosModel",
    "AssignmentPolicyRule",
    "ComponentUri",
    "JsonObject",
    "Name",
    "PolicyRuleRef",
    "PolicyRuleValues",
    "PolicyUri",
    "WrappedPolicyRule",
    "rule_values",
]
