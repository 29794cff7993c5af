"""`createCluster` and `addNode` documents applied on a node: checked against the network this node
knows, then stored where the records' owners fold them in (aiosd.controller.records):
`clusters/spec:<cluster>` (metadata, tags, config, region) and `clusters/node:<node>` (tags,
nodeMetadata with its `labels`).

Checks (each a Problem naming the field): the cluster or node must exist (a member membership
knows, or this node), labels must be an object of strings.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from aiosd.controller.records import NODE_PREFIX, SPEC_PREFIX
from aiosd.specs.errors import Problem, join_path
from aiosd.specs.parse import ParsedCluster, ParsedNode

VALUES = "body.spec.values"
MAX_LABELS = 64


def label_problems(meta: dict[str, Any], path: str) -> list[Problem]:
    labels = meta.get("labels")
    if labels is None:
        return []
    lpath = join_path(join_path(path, "nodeMetadata"), "labels")
    if not isinstance(labels, dict):
        return [Problem(lpath, "must be an object of string labels")]
    if len(labels) > MAX_LABELS:
        return [Problem(lpath, f"at most {MAX_LABELS} labels")]
    return [Problem(join_path(lpath, str(k)), f"must be a string, got {type(v).__name__}")
            for k, v in labels.items() if not isinstance(v, str)]


def plan_cluster(p: ParsedCluster, clusters: Collection[str]) -> tuple[list[Problem], tuple[str, dict[str, Any]]]:
    """Problems, and the (key, value) to store for one createCluster document."""
    s = p.spec
    probs = [] if s.id in clusters else [Problem(join_path(VALUES, "id"), f"cluster {s.id!r} is not a cluster of "
                                                 f"this network; known: {', '.join(sorted(clusters)) or 'none'}")]
    value = {"id": s.id, "regionId": s.region_id, "tags": list(s.tags), "clusterMetadata": dict(s.cluster_metadata),
             "config": s.config.model_dump(mode="json", by_alias=True)}
    return probs, (SPEC_PREFIX + s.id, value)


def plan_node(p: ParsedNode, nodes: Collection[str]) -> tuple[list[Problem], tuple[str, dict[str, Any]]]:
    """Problems, and the (key, value) to store for one addNode document."""
    s = p.spec
    probs = [] if s.id in nodes else [Problem(join_path(VALUES, "id"), f"node {s.id!r} is not a node of this "
                                              "network (its id is the one `aiosd nodes` lists)")]
    probs += label_problems(dict(s.node_metadata), VALUES)
    return probs, (NODE_PREFIX + s.id, {"id": s.id, "tags": list(s.tags), "nodeMetadata": dict(s.node_metadata)})


__all__ = ["label_problems", "plan_cluster", "plan_node"]
