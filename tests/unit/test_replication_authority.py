"""Write authority per table: table-driven."""

from __future__ import annotations

import pytest

from federation.replication.authority import AdminOnly, AnyMember, LeaderOnly, SelfKeyed, TableRules
from federation.sansio import NodeId

RULES = TableRules(
    {
        "metrics": AnyMember(),
        "nodes": SelfKeyed(),
        "specs": AdminOnly(lambda o: o == "admin1"),
        "placements": LeaderOnly(lambda key: NodeId("lead") if key.startswith("c1/") else None),
    }
)


@pytest.mark.parametrize(
    ("origin", "table", "key", "ok"),
    [
        ("n1", "metrics", "anything", True),
        ("n1", "nodes", "n1", True),
        ("n1", "nodes", "n1/gpu0", True),
        ("n1", "nodes", "n2", False),
        ("n1", "nodes", "n10", False),  # prefix of another id is not enough
        ("admin1", "specs", "s", True),
        ("n1", "specs", "s", False),
        ("lead", "placements", "c1/block-a", True),
        ("n1", "placements", "c1/block-a", False),
        ("lead", "placements", "c2/block-a", False),  # no known leader: nobody
        ("admin1", "unknown", "x", False),
    ],
)
def test_rules(origin: str, table: str, key: str, ok: bool) -> None:
    assert RULES.may_write(NodeId(origin), table, key) is ok


def test_tables_listed() -> None:
    assert RULES.tables == {"metrics", "nodes", "specs", "placements"}
