"""block_record and diff (aiosd.blocks.network): the network record of a block, and what a node
writes or deletes to keep its share of the `blocks` table."""

from __future__ import annotations

from typing import Any

from aiosd.blocks.network import InstanceRow, block_record, diff

REC = {"id": "b1", "componentUri": "model.echo:1.0.0-stable", "policies": {"autoscaler": {"policyRuleURI": "x"}},
       "minInstances": 1, "maxInstances": 3, "desiredInstances": 2, "document": {"big": True}, "tags": ["a"]}


def test_block_record_says_where_it_runs() -> None:
    rows = [InstanceRow("b1-1", "n2", "starting"), InstanceRow("b1-0", "n1", "healthy")]
    r = block_record(REC, owner="n1", cluster="c1", placement="node", instances=rows)
    assert r["nodes"] == ["n1", "n2"] and [i["instance_id"] for i in r["instances"]] == ["b1-0", "b1-1"]
    assert r["status"] == {"instances": 2, "healthy": 1} and r["desiredInstances"] == 2
    assert r["policies"] == REC["policies"] and r["tags"] == ["a"] and "document" not in r
    assert block_record(REC, owner="n1", cluster="c1", placement="cluster", instances=[], desired=0)[
        "desiredInstances"] == 0


def test_diff_writes_changes_and_deletes_only_what_it_owns() -> None:
    mine = {"owner": "me"}
    have: dict[str, dict[str, Any]] = {"same": {"v": 1}, "old": {"v": 1}, "gone": mine, "theirs": {"owner": "other"}}
    want = {"same": {"v": 1}, "old": {"v": 2}, "new": {"v": 3}}
    puts, gone = diff(want, have, lambda v: v.get("owner") == "me")
    assert puts == {"old": {"v": 2}, "new": {"v": 3}} and gone == ["gone"]
    assert diff({}, {}, lambda v: True) == ({}, [])
