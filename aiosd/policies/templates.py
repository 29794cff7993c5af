"""Templates, the spec store and governance pre-checks: code that shapes and guards specs.

- A template (AIOS TemplateObject) links a `templateUri` to a policy; `Templates.convert(doc)`
  runs that policy on a spec whose templateUri is not Parser/V1 and returns a Parser/V1 document
  (the internal form), which the caller then validates like any spec.
- The spec store (AIOS SpecStoreObject) keeps reusable specs by `specUri`.
- `Governance.precheck(action, payload)` runs the policy the `actionsPolicyMap` names for the
  action; it may veto (PolicyVetoed naming the policy) or return a rewritten payload.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aiosd.policies.errors import PolicyError, PolicyVetoed
from aiosd.policies.runner import AsyncPolicyRunner
from aiosd.policies.store import Book
from aiosd.specs.envelope import PARSER_V1
from aiosd.specs.errors import SpecError

# AIOS governance actions (aios.md §5, pre-check policies); others are accepted as free names.
KNOWN_ACTIONS = ("add_node", "remove_node", "add_block", "remove_block", "scale_block", "block_mgmt",
                 "add_cluster", "remove_cluster", "add_component", "remove_component", "add_vdag", "remove_vdag")
SpecType = Literal["block", "vdag", "cluster", "component", "search", "mgmtCommand", "node"]


class _Aios(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class TemplateVersion(_Aios):
    templateVersion: str = ""
    tag: str = ""


class TemplateRecord(_Aios):
    templateUri: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*:[\w.+\-]+$")
    templatePolicyRuleUri: str = Field(min_length=1, max_length=253)
    templateName: str = ""
    templateDescription: str = ""
    templateVersion: TemplateVersion = Field(default_factory=TemplateVersion)
    templateTags: list[str] | str = Field(default_factory=list)
    templateMetadata: dict[str, Any] = Field(default_factory=dict)
    templateData: str = ""  # AIOS stores the JSON-schema-like description as a string


class SpecVersion(_Aios):
    version: str = ""
    tag: str = ""


class SpecRecord(_Aios):
    specUri: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*:[\w.+\-]+$")
    specType: SpecType
    specName: str = ""
    specVersion: SpecVersion = Field(default_factory=SpecVersion)
    specDescription: str = ""
    specMetadata: dict[str, Any] = Field(default_factory=dict)
    specTags: list[str] | str = Field(default_factory=list)
    specData: dict[str, Any]


class GovernanceMap(_Aios):
    key: Literal["actionsPolicyMap"] = "actionsPolicyMap"
    actionsPolicyMap: dict[str, str] = Field(default_factory=dict)


def template_uri_of(doc: object) -> str | None:
    """The document's templateUri (header, head or parser_version), or None when it has none."""
    if not isinstance(doc, dict):
        return None
    header = doc.get("header", doc.get("head"))
    if isinstance(header, dict) and isinstance(header.get("templateUri"), str):
        return str(header["templateUri"])
    pv = doc.get("parser_version")
    return pv if isinstance(pv, str) else None


def is_builtin_template(uri: str | None) -> bool:
    return uri is None or uri.strip().lower() == PARSER_V1.lower()


class Templates:
    """Template records and the conversion hook."""

    def __init__(self, book: Book[TemplateRecord], runner: AsyncPolicyRunner) -> None:
        self.book = book
        self.runner = runner

    async def convert(self, document: Any) -> Any:
        """A Parser/V1 document: `document` itself, or what its template's policy makes of it.

        The policy gets `{"document": ..., "parameters": header.parameters}` and returns either a
        whole Parser/V1 document or just the `values` (wrapped here).
        Raises:
            SpecError: unknown template (listing those that exist), or a conversion that does not
                give a Parser/V1 document (the path names the template).
            PolicyError: the template's policy failed (timeout, crash, bad output).
        """
        uri = template_uri_of(document)
        if is_builtin_template(uri):
            return document
        assert uri is not None  # is_builtin_template(None) is True
        tpl = self.book.get(uri)
        if tpl is None:
            known = ", ".join([PARSER_V1, *(t.templateUri for t in self.book.all())][:20])
            raise SpecError.at("header.templateUri", f"template {uri[:80]!r} is not in the template store "
                               f"(known: {known}); push it with `aiosd template push`")
        header = document.get("header", document.get("head")) if isinstance(document, dict) else None
        params = header.get("parameters", {}) if isinstance(header, dict) else {}
        handle = await self.runner.load(tpl.templatePolicyRuleUri)
        out = await handle.eval({"document": copy.deepcopy(document), "parameters": params or {}})
        converted: Any = out if ("header" in out or "head" in out) else {
            "header": {"templateUri": PARSER_V1, "parameters": params or {}}, "body": {"spec": {"values": out}}}
        if not is_builtin_template(template_uri_of(converted)):
            raise SpecError.at("header.templateUri", f"template {uri} (policy {tpl.templatePolicyRuleUri}) must "
                               f"convert to a {PARSER_V1} document, got templateUri "
                               f"{str(template_uri_of(converted))[:80]!r}")
        return converted


class Governance:
    """The actionsPolicyMap and the pre-check that runs before a mutating action."""

    def __init__(self, book: Book[GovernanceMap], runner: AsyncPolicyRunner) -> None:
        self.book = book
        self.runner = runner

    @property
    def mapping(self) -> dict[str, str]:
        rec = self.book.get("actionsPolicyMap")
        return dict(rec.actionsPolicyMap) if rec is not None else {}

    async def set_mapping(self, mapping: Mapping[str, str]) -> None:
        """Replace the map. Raises SpecError naming an action whose policy does not exist."""
        for action, uri in mapping.items():
            if not isinstance(uri, str) or self.runner.catalog.find(uri) is None:
                raise SpecError.at(f"actionsPolicyMap.{action}", f"policy {str(uri)[:80]!r} is not registered")
        await self.book.put(GovernanceMap(actionsPolicyMap=dict(mapping)))

    async def precheck(self, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Run the action's pre-check policy; return the (possibly rewritten) payload.

        The policy gets `{"action", "payload"}` and answers `{"allowed": bool, "payload"?: {...},
        "reason"?: str}` (AIOS's `input_data` is accepted for the rewritten payload). A policy
        that fails is a veto: governance fails closed.
        Raises:
            PolicyVetoed: the policy said no, or could not answer (the reason says which).
        """
        uri = self.mapping.get(action)
        if uri is None:
            return dict(payload)
        try:
            handle = await self.runner.load(uri)
            out = await handle.eval({"action": action, "payload": dict(payload)})
        except PolicyError as e:
            raise PolicyVetoed(action, uri, f"the pre-check could not run ({e})") from None
        allowed = out.get("allowed")
        if allowed is not True:
            reason = out.get("reason") or out.get("input_data") or "no reason given"
            raise PolicyVetoed(action, uri, str(reason) if allowed is False else
                               f"answered allowed={allowed!r}; it must be true or false")
        new = out.get("payload", out.get("input_data", payload))
        if not isinstance(new, dict):
            raise PolicyVetoed(action, uri, f"rewrote the payload into {type(new).__name__}; it must be an object")
        return new


__all__ = [
    "KNOWN_ACTIONS",
    "Governance",
    "GovernanceMap",
    "SpecRecord",
    "TemplateRecord",
    "Templates",
    "is_builtin_template",
    "template_uri_of",
]
