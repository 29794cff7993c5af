"""Parse AIOS spec documents: JSON text -> documents -> envelope -> a typed, validated `ParsedSpec`.

Every failure is a `SpecError` whose problems name JSON paths. Cross-document work (a block
inheriting from its component) is `resolve.py`'s; storing is the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from aiosd.specs.block import BlockSpec
from aiosd.specs.cluster import ClusterSpec
from aiosd.specs.component import ComponentSpec, compile_protocols
from aiosd.specs.envelope import VALUES_PATH, Envelope, Kind, read_envelope
from aiosd.specs.errors import Problem, SpecError, join_path, problems_from_validation
from aiosd.specs.filters import CompositeQuery
from aiosd.specs.mgmt import MgmtSpec
from aiosd.specs.node import NodeSpec
from aiosd.specs.policy_rules import component_policy_problems
from aiosd.specs.protocol import Protocol, check_value
from aiosd.specs.search import SearchSpec, is_bare_query
from aiosd.specs.vdag import VdagSpec

# Why 16 MiB: the largest real AIOS spec is ~15 KB; a file of many documents stays far below this,
# and the cap keeps a mistaken `apply -f bigfile` from holding the daemon's memory.
MAX_TEXT_BYTES = 16 * 1024 * 1024
# Why 1,000: `apply -f DIR` of a whole deployment is tens of documents.
MAX_DOCUMENTS = 1000

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ParsedComponent:
    envelope: Envelope
    spec: ComponentSpec
    protocols: Mapping[str, Protocol]
    kind: Literal["component"] = "component"

    @property
    def key(self) -> str:
        return self.spec.uri


@dataclass(frozen=True, slots=True)
class ParsedBlock:
    envelope: Envelope
    spec: BlockSpec
    kind: Literal["block"] = "block"

    @property
    def key(self) -> str | None:
        """The block id, or None when the caller must generate one."""
        return self.spec.block_id


@dataclass(frozen=True, slots=True)
class ParsedCluster:
    envelope: Envelope
    spec: ClusterSpec
    kind: Literal["cluster"] = "cluster"

    @property
    def key(self) -> str:
        return self.spec.id


@dataclass(frozen=True, slots=True)
class ParsedNode:
    envelope: Envelope
    spec: NodeSpec
    kind: Literal["node"] = "node"

    @property
    def key(self) -> str:
        return self.spec.id


@dataclass(frozen=True, slots=True)
class ParsedVdag:
    envelope: Envelope
    spec: VdagSpec
    kind: Literal["vdag"] = "vdag"

    @property
    def key(self) -> str:
        return self.spec.uri


@dataclass(frozen=True, slots=True)
class ParsedMgmt:
    envelope: Envelope
    spec: MgmtSpec
    kind: Literal["mgmt"] = "mgmt"

    @property
    def key(self) -> str:
        return f"{self.spec.target[0]}:{self.spec.target[1]}"


@dataclass(frozen=True, slots=True)
class ParsedSearch:
    envelope: Envelope
    spec: SearchSpec
    query: CompositeQuery = field(repr=False)
    kind: Literal["search"] = "search"

    @property
    def key(self) -> str:
        return self.spec.match_type or "search"


ParsedSpec = (
    ParsedComponent | ParsedBlock | ParsedCluster | ParsedNode | ParsedVdag | ParsedMgmt | ParsedSearch
)


def parse_document(obj: object, action: str | None = None) -> ParsedSpec:
    """Validate one decoded JSON document.

    Raises:
        SpecError: every problem found, each naming its JSON path.
    """
    env = read_envelope(obj, action)
    values = env.values
    base = VALUES_PATH
    if env.kind is Kind.COMPONENT:
        comp = _validate(ComponentSpec, values, base)
        protocols = compile_protocols(comp, base)
        _raise_if(_component_problems(comp, protocols, base))
        return ParsedComponent(envelope=env, spec=comp, protocols=protocols)
    if env.kind is Kind.BLOCK:
        block = _validate(BlockSpec, values, base)
        _raise_if(block.problems(base))
        return ParsedBlock(envelope=env, spec=block)
    if env.kind is Kind.CLUSTER:
        cluster = _validate(ClusterSpec, values, base)
        _raise_if(cluster.problems(base))
        return ParsedCluster(envelope=env, spec=cluster)
    if env.kind is Kind.NODE:
        node = _validate(NodeSpec, values, base)
        _raise_if(node.problems(base))
        return ParsedNode(envelope=env, spec=node)
    if env.kind is Kind.VDAG:
        vdag = _validate(VdagSpec, values, base)
        _raise_if(vdag.problems(base))
        return ParsedVdag(envelope=env, spec=vdag)
    if env.kind is Kind.MGMT:
        mgmt = _validate(MgmtSpec, values, base)
        _raise_if(mgmt.problems(base))
        return ParsedMgmt(envelope=env, spec=mgmt)
    bare = is_bare_query(values)
    search = _validate(SearchSpec, {"filter": values} if bare else values, base)
    filter_path = base if bare else join_path(base, "filter")
    _raise_if(search.problems(base, filter_path))
    return ParsedSearch(envelope=env, spec=search, query=search.query(filter_path))


def parse_documents(text: str | bytes, action: str | None = None) -> list[ParsedSpec]:
    """Parse a JSON document, a JSON array of documents, or several concatenated documents.

    All or nothing: one bad document rejects the whole text. With more than one document, each
    problem's path starts with `documents[i].`.

    Raises:
        SpecError: JSON syntax errors (with line and column) and every document's problems.
    """
    docs = split_documents(text)
    parsed: list[ParsedSpec] = []
    problems: list[Problem] = []
    for i, doc in enumerate(docs):
        try:
            parsed.append(parse_document(doc, action))
        except SpecError as exc:
            if len(docs) == 1:
                raise
            prefix = f"documents[{i}]"
            problems.extend(
                Problem(f"{prefix}.{p.path}" if p.path else prefix, p.message) for p in exc.problems
            )
    if problems:
        raise SpecError(problems)
    return parsed


def split_documents(text: str | bytes) -> list[Any]:
    """Decode JSON text holding one or more documents (a top-level array is a list of documents).

    Raises:
        SpecError: for empty text, bad JSON (line and column named), or too many/too large.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_TEXT_BYTES:
            raise SpecError.at("input", f"the input is larger than {MAX_TEXT_BYTES} bytes")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError.at("input", f"the input is not UTF-8 (byte {exc.start})") from None
    if len(text) > MAX_TEXT_BYTES:
        raise SpecError.at("input", f"the input is larger than {MAX_TEXT_BYTES} characters")
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n\ufeff":
            pos += 1
        if pos >= n:
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise SpecError.at(
                f"documents[{len(docs)}]",
                f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            ) from None
        except RecursionError:
            raise SpecError.at(f"documents[{len(docs)}]", "is nested too deeply to read") from None
        if isinstance(obj, list) and not docs and _only_whitespace(text, end):
            docs.extend(obj)
        else:
            docs.append(obj)
        if len(docs) > MAX_DOCUMENTS:
            raise SpecError.at("input", f"the input holds more than {MAX_DOCUMENTS} documents")
        pos = end
    if not docs:
        raise SpecError.at("input", "the input holds no JSON document")
    return docs


def _only_whitespace(text: str, pos: int) -> bool:
    return not text[pos:].strip()


def _validate(model: type[M], values: dict[str, Any], base: str) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc, base)) from None


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        raise SpecError(problems)


def _component_problems(comp: ComponentSpec, protocols: Mapping[str, Protocol], base: str) -> list[Problem]:
    out: list[Problem] = []
    out += check_value(
        protocols["settings"], comp.component_init_settings, join_path(base, "componentInitSettings")
    )
    out += check_value(
        protocols["parameters"], comp.component_parameters, join_path(base, "componentParameters")
    )
    ppath = join_path(base, "policies")
    out += component_policy_problems(comp, ppath)
    return out


__all__ = [
    "MAX_DOCUMENTS",
    "MAX_TEXT_BYTES",
    "ParsedBlock",
    "ParsedCluster",
    "ParsedComponent",
    "ParsedMgmt",
    "ParsedNode",
    "ParsedSearch",
    "ParsedSpec",
    "ParsedVdag",
    "parse_document",
    "parse_documents",
    "split_documents",
]
