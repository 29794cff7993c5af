"""`aiosd llm split`, pure: the documents that split a checkpoint into stage blocks and the vDAG chaining them.

One block per contiguous layer range (component `llmstage.llm-stage`, examples/llm-stage), then a
linear vDAG `NAME:1.0-stable` over them. The vDAG's `controller.initSettings.llm` says what the OpenAI
endpoint needs to serve it as a model (`model` = the vDAG's name): the checkpoint (for the tokenizer),
the layer ranges and the context. No I/O: the CLI reads the component document and applies the result.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

STAGE_COMPONENT_URI = "llmstage.llm-stage:1.0.0-stable"
VERSION = {"version": "1.0", "release-tag": "stable"}
LLM_KEY = "llm"  # controller.initSettings key marking a split-model vDAG


class SplitError(ValueError):
    """A split request that cannot be built; the message names the bad field."""


def vdag_uri(name: str) -> str:
    return f"{name}:{VERSION['version']}-{VERSION['release-tag']}"


def cuts_of(counts: Sequence[int]) -> list[tuple[int, int]]:
    """Layer counts per stage → contiguous [start, end) ranges."""
    edges = [0, *itertools.accumulate(counts)]
    return list(itertools.pairwise(edges))


def check_ranges(ranges: Sequence[tuple[int, int]], layers: int) -> None:
    """Ranges must be non-empty, contiguous and cover [0, layers). Raises SplitError."""
    if not ranges:
        raise SplitError("stages: at least one stage")
    if ranges[0][0] != 0 or ranges[-1][1] != layers:
        raise SplitError(f"stages: the ranges must cover layers [0, {layers})")
    for i, (a, b) in enumerate(ranges):
        if b <= a:
            raise SplitError(f"stages[{i}]: empty layer range [{a}, {b})")
        if i and ranges[i - 1][1] != a:
            raise SplitError(f"stages[{i}]: not contiguous with the stage before it")


def split_documents(component: Mapping[str, Any], name: str, model_path: str, ranges: Sequence[tuple[int, int]],
                    *, dtype: str = "float32", device: str = "cpu", max_context: int = 2048, replicas: int = 1,
                    max_sessions: int = 8, threads: int | None = None, cpus: float = 0.5,
                    wait_s: float = 10.0) -> list[dict[str, Any]]:
    """[component, stage blocks..., vDAG] documents. Raises SplitError naming the bad field."""
    if not name or len(name) > 60 or not all(c.isalnum() or c in "-_" for c in name):
        raise SplitError("name: 1..60 letters, digits, '-' or '_'")
    if replicas < 1 or max_sessions < 1 or max_context < 2 or not 0 < wait_s <= 3600:
        raise SplitError("replicas, max_sessions >= 1, max_context >= 2 and 0 < step timeout <= 3600")
    check_ranges(ranges, ranges[-1][1] if ranges else 0)
    settings: dict[str, Any] = {"dtype": dtype, "device": device, "max_sessions": max_sessions,
                                "max_context": max_context}
    if threads is not None:
        settings["threads"] = threads
    docs: list[dict[str, Any]] = [copy.deepcopy(dict(component))]
    nodes, conns = [], []
    for i, (a, b) in enumerate(ranges):
        bid = f"{name}-s{i}"
        values = {"blockId": bid, "blockComponentURI": STAGE_COMPONENT_URI, "minInstances": replicas,
                  "maxInstances": replicas, "blockInitData": {"model_path": model_path, "layers": [a, b]},
                  "initSettings": settings, "parameters": {},
                  "policyRulesSpec": [
                      {"values": {"name": "resourceAllocator", "policyRuleURI": "policy.resourceAllocator.cpu:v1",
                                  "parameters": {"cpus": cpus}, "settings": {"selection_mode": "spread"}}},
                      {"values": {"name": "loadBalancer", "policyRuleURI": "policy.loadBalancer.session-sticky:v1",
                                  "parameters": {"cache_sessions": True}, "settings": {"session_cache_size": 1000}}}]}
        docs.append({"header": {"templateUri": "Parser/V1", "parameters": {}}, "body": {"spec": {"values": values}}})
        nodes.append({"nodeLabel": f"s{i}", "manualBlockId": bid,
                      "modelParameters": {"sessionAffinity": True}})  # a session's steps reach its caches
        if i:
            conns.append({"nodeLabel": f"s{i}", "inputs": [{"nodeLabel": f"s{i - 1}"}]})
    llm = {"model_path": model_path, "layers": [list(r) for r in ranges], "max_context": max_context,
           "dtype": dtype}
    vdag = {"vdagName": name, "vdagVersion": dict(VERSION), "nodes": nodes, "graph": {"connections": conns},
            "controller": {"initSettings": {"maxOutputWaitTimeSeconds": wait_s, LLM_KEY: llm}}}
    docs.append({"header": {"templateUri": "Parser/V1", "parameters": {}}, "body": {"spec": {"values": vdag}}})
    return docs


def split_info(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `llm` settings of a vDAG record that serves a split model, else None."""
    ctl = record.get("controller")
    init = ctl.get("initSettings") if isinstance(ctl, Mapping) else None
    info = init.get(LLM_KEY) if isinstance(init, Mapping) else None
    if not isinstance(info, Mapping) or not isinstance(info.get("model_path"), str):
        return None
    return dict(info)


__all__ = ["LLM_KEY", "STAGE_COMPONENT_URI", "SplitError", "check_ranges", "cuts_of", "split_documents",
           "split_info", "vdag_uri"]
