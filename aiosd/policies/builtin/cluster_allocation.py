"""Cluster allocator `policy.clusterAllocator.filter:v1`: filter clusters, keep the best few, pick one.

`parameters.filter` is a composite query (`clusterQuery` over the cluster record,
`clusterMetricsQuery` over its `cluster_metrics`). Actions: `selection` `{filter_result:
[clusters]}` -> `{clusters}` (at most `settings.max_candidates`); `post_dry_run` `{clusters:
[{cluster_id, score_data{score}}]}` -> the entry with the highest score (ties: first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from aiosd.policies.contract import AIOSv1PolicyRule
from aiosd.policies.errors import PolicyInputError
from aiosd.specs.errors import Problem, SpecError, join_path
from aiosd.specs.filters import CompositeQuery, compile_query

CLUSTER_FILTER_URI = "policy.clusterAllocator.filter:v1"


class ClusterFilter(AIOSv1PolicyRule):
    description: ClassVar[str] = "clusterQuery/clusterMetricsQuery filter, then the best-scored dry run"
    parameters_protocol: ClassVar[Mapping[str, Any]] = {"filter": {"type": "object"}}
    settings_protocol: ClassVar[Mapping[str, Any]] = {"max_candidates": {"type": "integer", "min": 1}}

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        super().__init__(rule_id, settings, parameters)
        raw = parameters.get("filter")
        self.query: CompositeQuery | None = compile_query(raw, "parameters.filter") if raw else None

    @classmethod
    def check_config(
        cls, parameters: Mapping[str, Any], settings: Mapping[str, Any], path: str
    ) -> list[Problem]:
        raw = parameters.get("filter")
        if not raw:
            return []
        try:
            compile_query(raw, join_path(join_path(path, "parameters"), "filter"))
        except SpecError as exc:
            return list(exc.problems)
        return []

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        action = input_data.get("action")
        if action == "selection":
            found = input_data.get("filter_result")
            if not isinstance(found, list):
                raise PolicyInputError("input_data.filter_result", "must be a list of cluster records")
            keep = [c for c in found if isinstance(c, Mapping) and self.matches(c)]
            limit = self.settings.get("max_candidates")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                keep = keep[:limit]
            return {"clusters": keep}
        if action == "post_dry_run":
            entries = input_data.get("clusters")
            if not isinstance(entries, list):
                raise PolicyInputError("input_data.clusters", "must be a list of {cluster_id, score_data}")
            best: Mapping[str, Any] | None = None
            best_score = 0.0
            for e in entries:
                score = e.get("score_data", {}).get("score", 0) if isinstance(e, Mapping) else 0
                if isinstance(score, int | float) and not isinstance(score, bool) and score > best_score:
                    best, best_score = e, float(score)
            return dict(best) if best is not None else {"cluster_id": None}
        raise PolicyInputError(
            "input_data.action", f"must be selection or post_dry_run, got {action!r}"[:120]
        )

    def matches(self, cluster: Mapping[str, Any]) -> bool:
        if self.query is None:
            return True
        metrics = cluster.get("cluster_metrics", {})
        return self.query.predicate("clusterQuery")(cluster) and self.query.predicate("clusterMetricsQuery")(
            metrics if isinstance(metrics, Mapping) else {}
        )


__all__ = ["CLUSTER_FILTER_URI", "ClusterFilter"]
