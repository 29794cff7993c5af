"""AIOS specs in: the envelope, the per-kind models, the protocol mini-language, block resolution."""

from aiosd.specs.block import BlockSpec
from aiosd.specs.cluster import ClusterSpec
from aiosd.specs.component import ComponentSpec
from aiosd.specs.envelope import ACTIONS, PARSER_V1, Envelope, Kind, detect_kind, read_envelope
from aiosd.specs.errors import Problem, SpecError
from aiosd.specs.mgmt import MgmtSpec
from aiosd.specs.node import NodeSpec
from aiosd.specs.parse import (
    ParsedBlock,
    ParsedCluster,
    ParsedComponent,
    ParsedMgmt,
    ParsedNode,
    ParsedSearch,
    ParsedSpec,
    ParsedVdag,
    parse_document,
    parse_documents,
    split_documents,
)
from aiosd.specs.protocol import FieldSpec, Protocol, check_value, parse_protocol
from aiosd.specs.resolve import PolicyCatalog, PolicyInfo, PolicySlot, ResolvedBlock, resolve_block
from aiosd.specs.search import SearchSpec
from aiosd.specs.vdag import VdagSpec

__all__ = [
    "ACTIONS",
    "PARSER_V1",
    "BlockSpec",
    "ClusterSpec",
    "ComponentSpec",
    "Envelope",
    "FieldSpec",
    "Kind",
    "MgmtSpec",
    "NodeSpec",
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
