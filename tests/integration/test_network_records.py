"""The network's component and block registries between three real daemons (issue 17, part 2).

A component applied on the admin node is in every node's `aiosd get components` within 3 s; a
block applied on any node (alone or through the controller) is listed by `aiosd get blocks` on
every node; deleting removes them everywhere. A non-admin node resolves a block against a
component it only knows from the network.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon
from tests.instances import echo_block_docs
from tests.integration.test_controller_daemons import SPREAD, api, leader_of, node_id, start_cluster
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(300)  # ~100 s alone; 190 s seen on a loaded machine
ENV = {"AIOSD_REPLICATION_PROFILE": "test", "AIOSD_MEMBERSHIP_PROFILE": "test"}


def keys(d: Daemon, table: str) -> dict[str, Any]:
    """The table through the API (fast: the 3 s bound is the network's, not the CLI's start-up)."""
    out = api(d, "GET", f"/v1/registry/{table}")
    return {i["key"]: i["value"] for i in out["items"]}


def cli_keys(d: Daemon, table: str) -> set[str]:
    return {i["key"] for i in d.json("get", table)["items"]}


def everywhere(nodes: list[Daemon], table: str, key: str, present: bool = True) -> bool:
    return all((key in keys(d, table)) is present for d in nodes)


def test_components_and_blocks_are_network_records(tmp_path: Path, daemons: list[Daemon]) -> None:
    nodes = start_cluster(tmp_path, daemons, 3, env=ENV)
    n1, n2, n3 = nodes
    assert "admin" in n1.json("status")["roles"] and "admin" not in n2.json("status")["roles"]
    comp_doc, block_doc = echo_block_docs("net-echo", 1, SPREAD).split("\n")
    uri = "model.echo:1.0.0-stable"
    (tmp_path / "comp.json").write_text(comp_doc)
    r = n1.cli("apply", "-f", str(tmp_path / "comp.json"), "--json")
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    wait_sync(lambda: everywhere(nodes, "components", uri), timeout_s=3.0, interval_s=0.05)
    took = time.monotonic() - t0
    assert took < 3.0 and all(uri in cli_keys(d, "components") for d in nodes)
    # n2 is no admin and never saw the component document: it resolves it from the network.
    (tmp_path / "block.json").write_text(block_doc)
    r = n2.cli("apply", "-f", str(tmp_path / "block.json"), "--json")
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: everywhere(nodes, "blocks", "net-echo"), timeout_s=30, interval_s=0.2)
    assert all("net-echo" in cli_keys(d, "blocks") for d in nodes)
    rec = keys(n3, "blocks")["net-echo"]
    assert rec["owner"] == node_id(n2) and rec["placement"] == "node" and rec["componentUri"] == uri
    assert "resourceAllocator" in rec["policies"] and rec["minInstances"] == 1
    wait_sync(lambda: keys(n1, "blocks")["net-echo"]["status"]["healthy"] == 1, timeout_s=60, interval_s=0.2)
    assert keys(n1, "blocks")["net-echo"]["nodes"] == [node_id(n2)]
    # The table view, one record, the local catalog behind --local, an AIOS filter.
    table = n3.cli("get", "blocks")
    assert table.returncode == 0 and "net-echo" in table.stdout and "node" in table.stdout, table.stderr
    assert n3.json("get", "block", "net-echo")["desiredInstances"] == 1
    assert n3.json("get", "blocks", "--local")["items"] == []
    flt = json.dumps({"variable": "owner", "operator": "==", "value": node_id(n2)})
    assert [i["key"] for i in n1.json("get", "blocks", "--filter", flt)["items"]] == ["net-echo"]
    # A cluster block: its record is the leader's, wherever it was applied.
    cdoc = echo_block_docs("net-cluster", 2, SPREAD).split("\n")[1]
    (tmp_path / "cluster.json").write_text(cdoc)
    r = n3.cli("apply", "-f", str(tmp_path / "cluster.json"), "--cluster", "--json")
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: everywhere(nodes, "blocks", "net-cluster"), timeout_s=30, interval_s=0.2)
    crec = wait_sync(lambda: (v := keys(n2, "blocks")["net-cluster"]) and len(v["instances"]) == 2 and v,
                     timeout_s=30, interval_s=0.2)
    assert crec
    assert crec["placement"] == "cluster" and crec["desiredInstances"] == 2 and len(crec["nodes"]) == 2
    assert crec["owner"] == node_id(leader_of(nodes))
    # Deleting removes them everywhere (the owner's delete, the cluster's, the admin's).
    assert n2.cli("delete", "block", "net-echo").returncode == 0
    assert n1.cli("delete", "block", "net-cluster").returncode == 0
    wait_sync(lambda: everywhere(nodes, "blocks", "net-echo", False) and everywhere(nodes, "blocks", "net-cluster", False),
              timeout_s=30, interval_s=0.2)
    r = n1.cli("delete", "component", uri)
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: everywhere(nodes, "components", uri, False), timeout_s=20, interval_s=0.2)
    print(f"component on every node after {took:.2f}s")
