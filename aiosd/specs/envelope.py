"""The AIOS spec envelope: `header` (or `head`, or top-level `parser_version`) + `body.spec.values`.

Reads the envelope and decides the document kind, from the action when one is given, otherwise
from the shape of `values`. It does not validate `values`; the per-kind models do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from aiosd.specs.errors import Problem, SpecError, describe_type

PARSER_V1 = "Parser/V1"
VALUES_PATH = "body.spec.values"


class Kind(StrEnum):
    COMPONENT = "component"
    BLOCK = "block"
    CLUSTER = "cluster"
    NODE = "node"
    VDAG = "vdag"
    MGMT = "mgmt"
    SEARCH = "search"


# AIOS parser actions (`POST /api/<action>`) and the kind each one creates.
ACTIONS: Mapping[str, Kind] = {
    "addComponent": Kind.COMPONENT,
    "createBlock": Kind.BLOCK,
    "createCluster": Kind.CLUSTER,
    "addNode": Kind.NODE,
    "createvDAG": Kind.VDAG,
    "executeMgmtCommand": Kind.MGMT,
    "search": Kind.SEARCH,
    "filter": Kind.SEARCH,
}

_QUERY_KEYS = frozenset(
    {
        "clusterQuery",
        "clusterMetricsQuery",
        "blockQuery",
        "blockMetricsQuery",
        "vdagQuery",
        "vdagMetricsQuery",
        "componentQuery",
        "nodeQuery",
        "nodeMetricsQuery",
        "policyQuery",
        "policyFunctionQuery",
        "policyGraphQuery",
        "filter",
        "rankingPolicyRule",
        "matchType",
    }
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What surrounds `values`: the template, its parameters, and where they were found."""

    kind: Kind
    values: dict[str, Any]
    template_uri: str = PARSER_V1
    parameters: Mapping[str, Any] = field(default_factory=dict)
    template_type: str = ""
    header_key: Literal["header", "head", "parser_version"] = "header"
    header_path: str = "header"


def read_envelope(obj: object, action: str | None = None) -> Envelope:
    """Read the envelope of one spec document.

    Raises:
        SpecError: naming the path of a missing or wrong envelope part.
    """
    if not isinstance(obj, dict):
        raise SpecError.at("document", f"must be a JSON object with header and body, got {describe_type(obj)}")
    header_key: Literal["header", "head", "parser_version"]
    if "header" in obj:
        header_key, header = "header", obj["header"]
    elif "head" in obj:
        header_key, header = "head", obj["head"]
    elif "parser_version" in obj:
        header_key, header = "parser_version", {"templateUri": obj["parser_version"]}
    else:
        raise SpecError.at(
            "header", "is required: a header (or head) with templateUri, or a top-level parser_version"
        )
    hpath = header_key
    if not isinstance(header, dict):
        raise SpecError.at(hpath, f"must be an object with templateUri, got {describe_type(header)}")
    template = header.get("templateUri")
    tpath = "parser_version" if header_key == "parser_version" else f"{hpath}.templateUri"
    if not isinstance(template, str):
        raise SpecError.at(tpath, f"must be a template URI string such as {PARSER_V1}, got {describe_type(template)}")
    if template.strip().lower() != PARSER_V1.lower():
        raise SpecError.at(
            tpath,
            f"template {template[:80]!r} is not available: only {PARSER_V1} is built in"
            " (custom templates need a template store)",
        )
    params = header.get("parameters", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise SpecError.at(f"{hpath}.parameters", f"must be an object, got {describe_type(params)}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise SpecError.at("body", f"must be an object with spec.values, got {describe_type(body)}")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise SpecError.at("body.spec", f"must be an object with values, got {describe_type(spec)}")
    values = spec.get("values")
    if not isinstance(values, dict):
        raise SpecError.at(VALUES_PATH, f"must be an object, got {describe_type(values)}")
    ttype = spec.get("@templateType", "")
    if not isinstance(ttype, str):
        raise SpecError.at("body.spec.@templateType", f"must be a string, got {describe_type(ttype)}")
    kind = detect_kind(values, action)
    return Envelope(
        kind=kind,
        values=values,
        template_uri=PARSER_V1,
        parameters=params,
        template_type=ttype,
        header_key=header_key,
        header_path=hpath,
    )


def detect_kind(values: Mapping[str, Any], action: str | None = None) -> Kind:
    """The document kind: from the action if given, else from the keys of `values`.

    Raises:
        SpecError: for an unknown action, or values whose kind cannot be told.
    """
    if action is not None:
        kind = ACTIONS.get(action)
        if kind is None:
            try:
                return Kind(action)
            except ValueError:
                raise SpecError(
                    [
                        Problem(
                            "action",
                            f"unknown action {action[:60]!r}; known: "
                            f"{', '.join(ACTIONS)} (or a kind: "
                            f"{', '.join(k.value for k in Kind)})",
                        )
                    ]
                ) from None
        return kind
    if "componentId" in values or "containerRegistryInfo" in values:
        return Kind.COMPONENT
    if "blockComponentURI" in values:
        return Kind.BLOCK
    if "vdagName" in values or "vdagVersion" in values:
        return Kind.VDAG
    if "mgmtCommand" in values:
        return Kind.MGMT
    if any(k in _QUERY_KEYS for k in values):
        return Kind.SEARCH
    if isinstance(values.get("nodes"), dict) or "regionId" in values or "clusterMetadata" in values:
        return Kind.CLUSTER
    if "id" in values and (
        "clusterId" in values or "nodeMetadata" in values or "gpus" in values or "vcpus" in values
    ):
        return Kind.NODE
    raise SpecError.at(
        VALUES_PATH,
        "cannot tell the document kind: expected componentId (component),"
        " blockComponentURI (block), id + nodes (cluster), id + clusterId (node),"
        " vdagName (vdag), mgmtCommand (mgmt) or clusterQuery/blockQuery/filter"
        " (search), or name the action",
    )




__all__ = ["ACTIONS", "PARSER_V1", "VALUES_PATH", "Envelope", "Kind", "detect_kind", "read_envelope"]
