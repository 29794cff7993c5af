"""Node and cluster records (aiosd.controller.records) and the createCluster/addNode checks
(aiosd.blocks.infra): plain functions, no daemon."""

from __future__ import annotations

from pathlib import Path

from aiosd.blocks.infra import label_problems, plan_cluster, plan_node
from aiosd.controller.records import cluster_record, hardware, node_record
from aiosd.specs.parse import ParsedCluster, ParsedNode, parse_document

GPU = {"index": 0, "uuid": "GPU-0", "name": "NVIDIA H100", "memoryMb": 81559.0}


def _doc(values: dict[str, object]) -> dict[str, object]:
    return {"header": {"templateUri": "Parser/V1", "parameters": {}}, "body": {"spec": {"values": values}}}


def test_node_record_has_hardware_software_and_applied_labels(tmp_path: Path) -> None:
    hw = hardware(tmp_path, [GPU])
    assert hw["cpu"]["count"] >= 1 and hw["memoryMb"] > 0 and hw["disks"][0]["path"] == str(tmp_path)
    rec = node_record("n1", address="127.0.0.2:1", cluster="c", roles=["member", "admin"], hw=hw,
                      applied={"tags": ["t"], "nodeMetadata": {"labels": {"zone": "eu"}}})
    assert rec["roles"] == ["admin", "member"] and rec["labels"] == {"zone": "eu"} and rec["tags"] == ["t"]
    assert rec["gpus"] == {"count": 1, "memory": 81559.0, "modelNames": ["NVIDIA H100"],
                           "gpus": [{"modelName": "NVIDIA H100", "memory": 81559.0}]}
    assert rec["software"]["aiosd"] and rec["status"] == "alive"


def test_cluster_record_counts_alive_nodes_and_keeps_the_spec(tmp_path: Path) -> None:
    hw = hardware(tmp_path, [GPU])
    nodes = {n: node_record(n, address="", cluster="c", roles=[], hw=hw) for n in ("a", "b")}
    rec = cluster_record("c", leader="a", term=3, members={"a": "alive", "b": "dead"}, nodes=nodes,
                         spec={"tags": ["gpu"], "clusterMetadata": {"vendor": "acme"}})
    assert rec["nodeStatus"] == {"a": "alive", "b": "dead"} and rec["nodes"]["alive"] == 1
    assert rec["gpus"]["count"] == 1 and rec["tags"] == ["gpu"] and rec["clusterMetadata"]["vendor"] == "acme"
    assert rec["nodes"]["nodeData"][0]["gpus"]["modelNames"] == ["NVIDIA H100"] and rec["status"] == "live"
    assert cluster_record("c", leader="a", term=1, members={}, nodes={})["status"] == "down"


def test_infra_documents_name_the_field_when_wrong() -> None:
    c = parse_document(_doc({"id": "lab", "tags": ["x"], "clusterMetadata": {"name": "lab"}}))
    assert isinstance(c, ParsedCluster)
    probs, (key, value) = plan_cluster(c, {"lab"})
    assert probs == [] and key == "spec:lab" and value["tags"] == ["x"]
    probs, _ = plan_cluster(c, {"default"})
    assert probs[0].path.endswith(".id") and "'lab' is not a cluster" in probs[0].message
    n = parse_document(_doc({"id": "n9", "nodeMetadata": {"labels": {"zone": 7, "ok": "y"}}}))
    assert isinstance(n, ParsedNode)
    probs, (key, _) = plan_node(n, {"n1"})
    assert key == "node:n9" and [p.path.rsplit(".", 1)[-1] for p in probs] == ["id", "zone"]
    assert label_problems({"labels": ["a"]}, "v")[0].path == "v.nodeMetadata.labels"
