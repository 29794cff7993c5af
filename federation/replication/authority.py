"""Write authority per table: who may write (or delete) which records.

Rules are data (frozen dataclasses) plus injected predicates, because certificates and Raft
leadership live elsewhere. Predicates must be deterministic functions of what every node
agrees on (a node's admin role, the leader of the term named in the key): a rule that differs
between nodes would make nodes disagree on which records they keep.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, assert_never

from federation.sansio import NodeId


@dataclass(frozen=True, slots=True)
class AnyMember:
    """Any node with a valid certificate may write (e.g. metric summaries keyed by node)."""


@dataclass(frozen=True, slots=True)
class SelfKeyed:
    """Only node X may write key X, or keys starting with `X/` (the nodes table)."""


@dataclass(frozen=True, slots=True)
class AdminOnly:
    """Only origins whose certificate has the admin role (components, specs, policies, ...)."""

    is_admin: Callable[[NodeId], bool]


@dataclass(frozen=True, slots=True)
class LeaderOnly:
    """Only the leader that `leader_for(key)` names (placements: key names cluster and term)."""

    leader_for: Callable[[str], NodeId | None]


Rule = AnyMember | SelfKeyed | AdminOnly | LeaderOnly


class Authority(Protocol):
    """Decides whether `origin` may write `(table, key)`; checked on every write and merge."""

    def may_write(self, origin: NodeId, table: str, key: str) -> bool: ...


def allowed(rule: Rule, origin: NodeId, key: str) -> bool:
    """Does `rule` let `origin` write `key`?"""
    match rule:
        case AnyMember():
            return True
        case SelfKeyed():
            return key == origin or key.startswith(origin + "/")
        case AdminOnly(is_admin=is_admin):
            return is_admin(origin)
        case LeaderOnly(leader_for=leader_for):
            leader = leader_for(key)
            return leader is not None and leader == origin
        case _:
            assert_never(rule)


class TableRules:
    """An `Authority` from a table -> rule map; tables not in the map are refused."""

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self._rules = dict(rules)

    def may_write(self, origin: NodeId, table: str, key: str) -> bool:
        rule = self._rules.get(table)
        return rule is not None and allowed(rule, origin, key)

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self._rules)


__all__ = ["AdminOnly", "AnyMember", "Authority", "LeaderOnly", "Rule", "SelfKeyed", "TableRules", "allowed"]
