"""Node and cluster records between four real daemons (issue 17, part 1): three in cluster
`default`, one in `lab` with a fake GPU inventory (AIOSD_TEST_GPUS).

Every node's record and both clusters' records are on every node within 5 s of the join; a GPU
inventory change and a node's death show; createCluster and addNode documents apply (tags,
metadata, labels) and bad ones are refused naming the field; an AIOS clusterQuery on cluster
tags and node GPU names picks `lab` in `apply --cluster --dry-run`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, cli
from tests.instances import echo_block_docs
from tests.integration.test_controller_daemons import HOLLOW, SPREAD, api, ctl, node_id
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(240)
ENV = {**HOLLOW, "AIOSD_REPLICATION_PROFILE": "test", "AIOSD_MEMBERSHIP_PROFILE": "test"}
H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-h100-0", "total_mb": 81559}


def table(d: Daemon, name: str) -> dict[str, Any]:
    return {i["key"]: i["value"] for i in api(d, "GET", f"/v1/registry/{name}")["items"]}


def doc(kind_values: dict[str, Any]) -> str:
    return json.dumps({"header": {"templateUri": "Parser/V1", "parameters": {}}, "body": {"spec": {"values": kind_values}}})


def join(tmp_path: Path, daemons: list[Daemon], token: str, i: int, env: dict[str, str]) -> Daemon:
    r = cli("join", token, "--data-dir", str(tmp_path / f"n{i}"), "--json")
    assert r.returncode == 0, r.stderr
    d = Daemon(tmp_path, f"n{i}", p2p_host=f"127.0.0.{i + 1}", env=env).start()
    daemons.append(d)
    return d


def records_everywhere(nodes: list[Daemon], ids: set[str], clusters: set[str]) -> bool:
    return all(ids <= set(table(d, "nodes")) and clusters <= set(table(d, "clusters")) for d in nodes)


def test_node_and_cluster_records(tmp_path: Path, daemons: list[Daemon]) -> None:
    gpus = tmp_path / "gpus.json"
    gpus.write_text(json.dumps([H100]))
    n1 = Daemon(tmp_path, "n1", p2p_host="127.0.0.2", env=ENV).start()
    daemons.append(n1)
    tok = json.loads(n1.cli("token", "create", "--json", "--uses", "2", "--ttl", "10m").stdout)["token"]
    lab_tok = json.loads(n1.cli("token", "create", "--json", "--uses", "1", "--cluster", "lab").stdout)["token"]
    nodes = [n1]
    for i in (2, 3):
        nodes.append(join(tmp_path, daemons, tok, i, ENV))
        # The join is done when membership on every node says so; the records follow within 5 s.
        wait_sync(lambda: all(sum(x["state"] == "alive" for x in api(d, "GET", "/v1/nodes")["nodes"]) == len(nodes)
                              for d in nodes), timeout_s=30, interval_s=0.1)
        t0 = time.monotonic()
        try:
            wait_sync(lambda: records_everywhere(nodes, {node_id(d) for d in nodes}, {"default"}), timeout_s=8,
                      interval_s=0.1)
        except AssertionError:
            print({d.name: (list(table(d, "nodes")), list(table(d, "clusters"))) for d in nodes})
            print(nodes[-1].logs()[-4000:])
            raise
        took = time.monotonic() - t0
        assert took < 5.0, f"records on every node {took:.1f}s after the join"
    n4 = join(tmp_path, daemons, lab_tok, 4, {**ENV, "AIOSD_TEST_GPUS": str(gpus)})
    nodes.append(n4)
    ids = {node_id(d) for d in nodes}
    wait_sync(lambda: records_everywhere(nodes, ids, {"default", "lab"}), timeout_s=30, interval_s=0.2)
    # A node's record: address, cluster, roles, hardware with GPUs, software versions.
    rec = table(n1, "nodes")[node_id(n4)]
    assert rec["clusterId"] == "lab" and rec["address"].startswith("127.0.0.5:") and rec["status"] == "alive"
    assert rec["hardware"]["cpu"]["count"] >= 1 and rec["hardware"]["memoryMb"] > 0 and rec["hardware"]["disks"]
    assert rec["hardware"]["gpus"] == [{"index": 0, "uuid": "GPU-h100-0", "name": H100["name"], "memoryMb": 81559.0}]
    assert rec["gpus"]["modelNames"] == [H100["name"]] and rec["software"]["aiosd"]
    n2, n3 = nodes[1], nodes[2]
    assert "admin" in table(n2, "nodes")[node_id(n1)]["roles"]
    lab = wait_sync(lambda: (c := table(n2, "clusters").get("lab")) and c["nodeIds"] == [node_id(n4)] and c,
                    timeout_s=10, interval_s=0.2)
    assert lab
    assert lab["leader"] == node_id(n4) and lab["term"] >= 1 and lab["gpus"]["count"] == 1
    default = table(n4, "clusters")["default"]
    assert set(default["nodeIds"]) == {node_id(d) for d in nodes[:3]} and default["status"] == "live"
    assert default["leader"] == ctl(n1)["leader"]
    # A GPU inventory change (fake NVML) reaches every node's copy.
    gpus.write_text(json.dumps([H100, {**H100, "uuid": "GPU-h100-1"}]))
    wait_sync(lambda: table(n1, "nodes")[node_id(n4)]["gpus"]["count"] == 2, timeout_s=20, interval_s=0.2)
    wait_sync(lambda: table(n2, "clusters")["lab"]["gpus"]["count"] == 2, timeout_s=20, interval_s=0.2)
    # createCluster and addNode apply: tags and metadata on the cluster, labels on a node.
    (tmp_path / "lab.json").write_text(doc({"id": "lab", "tags": ["gpu", "eu"],
                                            "clusterMetadata": {"vendor": "acme"}}) + "\n" +
                                       doc({"id": node_id(n4), "tags": ["fast"], "nodeMetadata": {"labels": {"zone": "eu-1"}}}))
    r = n1.cli("apply", "-f", str(tmp_path / "lab.json"), "--json")
    assert r.returncode == 0, r.stderr
    assert [d["kind"] for d in json.loads(r.stdout)["documents"]] == ["cluster", "node"]
    wait_sync(lambda: table(n3, "clusters")["lab"]["tags"] == ["gpu", "eu"], timeout_s=20, interval_s=0.2)
    assert table(n3, "clusters")["lab"]["clusterMetadata"]["vendor"] == "acme"
    wait_sync(lambda: table(n2, "nodes")[node_id(n4)]["labels"] == {"zone": "eu-1"}, timeout_s=20, interval_s=0.2)
    assert table(n2, "nodes")[node_id(n4)]["tags"] == ["fast"]
    # Bad input: each refused with the field named, nothing stored.
    for values, field, why in [
            ({"id": "nope", "clusterMetadata": {"name": "nope"}}, "values.id", "not a cluster of this network"),
            ({"id": "ghost-node", "clusterId": "lab"}, "values.id", "not a node of this network"),
            ({"id": node_id(n4), "nodeMetadata": {"labels": {"zone": 7}}}, "labels.zone", "must be a string")]:
        assert isinstance(values, dict)
        (tmp_path / "bad.json").write_text(doc(values))
        bad = n1.cli("apply", "-f", str(tmp_path / "bad.json"))
        assert bad.returncode != 0 and field in bad.stderr and why in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    assert "nope" not in json.dumps(table(n1, "clusters"))
    # An AIOS clusterQuery on cluster tags and node GPU names picks lab (applied in default).
    comp, block = (json.loads(x) for x in echo_block_docs("gpu-echo", 1, SPREAD).splitlines())
    block["body"]["spec"]["values"]["policyRulesSpec"].append({"values": {
        "name": "clusterAllocator", "policyRuleURI": "policy.clusterAllocator.filter:v1",
        "parameters": {"filter": {"clusterQuery": {"logicalOperator": "AND", "conditions": [
            {"variable": "tags", "operator": "IN ANY", "value": ["gpu"]},
            {"variable": "nodes.nodeData.gpus.modelNames", "operator": "LIKE", "value": "%H100%"}]}}},
        "settings": {"max_candidates": 3}}})
    (tmp_path / "gpu-echo.json").write_text(json.dumps(comp) + "\n" + json.dumps(block))
    r = n2.cli("apply", "-f", str(tmp_path / "gpu-echo.json"), "--cluster", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    dry = next(d for d in json.loads(r.stdout)["documents"] if d["kind"] == "block")
    assert dry["placement"]["clusterId"] == "lab"
    # A node's death: the cluster's leader marks it in the cluster record.
    victim = next(d for d in nodes[:3] if node_id(d) != ctl(n1)["leader"])
    victim.kill9()
    survivor = next(d for d in nodes[:3] if d is not victim)
    wait_sync(lambda: table(survivor, "clusters")["default"]["nodeStatus"][node_id(victim)] in ("dead", "left"),
              timeout_s=30, interval_s=0.3)
    wait_sync(lambda: table(n4, "clusters")["default"]["nodes"]["alive"] == 2, timeout_s=10, interval_s=0.3)
