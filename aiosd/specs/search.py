"""The filter / search spec (`filter`, `search`): a composite query plus an optional ranking policy.

Accepted shapes of `values`: `{matchType?, filter: {clusterQuery, ...}, rankingPolicyRule?}`, or the
composite query itself (`{clusterQuery: ..., ...}`). Running the query is the caller's job.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiosd.specs.base import AiosModel, JsonObject, PolicyRuleRef
from aiosd.specs.errors import Problem, SpecError, join_path
from aiosd.specs.filters import CompositeQuery

MATCH_TYPES = ("cluster", "block", "component", "vdag", "node", "policy", "policyFunction", "policyGraph")


class SearchSpec(AiosModel):
    match_type: str | None = Field(default=None, alias="matchType")
    filter: JsonObject
    ranking_policy_rule: PolicyRuleRef | None = Field(default=None, alias="rankingPolicyRule")
    limit: int | None = Field(default=None, ge=1, le=100_000)

    def query(self, filter_path: str = "body.spec.values.filter") -> CompositeQuery:
        """The compiled composite query.

        Raises:
            FilterError: with paths under `filter_path`.
        """
        from aiosd.specs.filters import compile_query  # here, not at the top: filters imports specs.errors

        return compile_query(self.filter, filter_path)

    def problems(self, base: str, filter_path: str) -> list[Problem]:
        out: list[Problem] = []
        if self.match_type is not None and self.match_type not in MATCH_TYPES:
            out.append(
                Problem(
                    join_path(base, "matchType"),
                    f"must be one of {', '.join(MATCH_TYPES)}, got {self.match_type[:60]!r}",
                )
            )
        try:
            self.query(filter_path)
        except SpecError as exc:
            out.extend(exc.problems)
        return out


def is_bare_query(values: dict[str, Any]) -> bool:
    """True when `values` is the composite query itself rather than `{filter: ...}`."""
    return not ("filter" in values or "rankingPolicyRule" in values or "matchType" in values)


__all__ = ["MATCH_TYPES", "SearchSpec", "is_bare_query"]
