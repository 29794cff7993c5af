"""Real `aiosd run` processes joined with tokens: one Raft-elected controller per cluster.

Failover and reassignment use the default (lan) Raft and membership timers, as the issue asks;
the partition test also uses defaults. Partitions go through the transport's fault hook
(AIOSD_TEST_FAULTS=1 enables POST /v1/test/faults on test daemons only).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aiosd.client import Client
from aiosd.errors import ApiError
from tests.daemons import Daemon, cli
from tests.instances import echo_block_docs
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(150)
# Hollow nodes (ARCHITECTURE §10): the process driver, so no Podman service per daemon.
HOLLOW = {"AIOSD_RUNTIME_DRIVER": "process"}
SPREAD = {"uri": "policy.resourceAllocator.cpu:v1", "parameters": {"cpus": 0.1},
          "settings": {"selection_mode": "spread"}}


def api(d: Daemon, method: str, path: str, body: Any = None, timeout_s: float = 10.0) -> Any:
    async def go() -> Any:
        async with Client(d.socket, timeout_s=timeout_s) as c:
            return await c.request(method, path, body)

    return asyncio.run(go())


def ctl(d: Daemon) -> dict[str, Any]:
    out: dict[str, Any] = api(d, "GET", "/v1/controller", timeout_s=2.0)
    return out


def start_cluster(tmp_path: Path, daemons: list[Daemon], n: int, env: dict[str, str] | None = None,
                  per_node_env: list[dict[str, str]] | None = None) -> list[Daemon]:
    def env_of(i: int) -> dict[str, str]:
        return {**HOLLOW, **(env or {}), **(per_node_env[i] if per_node_env else {})}

    first = Daemon(tmp_path, "n1", p2p_host="127.0.0.2", env=env_of(0)).start()
    daemons.append(first)
    r = first.cli("token", "create", "--json", "--uses", str(n), "--ttl", "10m")
    assert r.returncode == 0, r.stderr
    token = json.loads(r.stdout)["token"]
    nodes = [first]
    for i in range(2, n + 1):
        r = cli("join", token, "--data-dir", str(tmp_path / f"n{i}"), "--json")
        assert r.returncode == 0, r.stderr
        d = Daemon(tmp_path, f"n{i}", p2p_host=f"127.0.0.{i + 1}", env=env_of(i - 1)).start()
        daemons.append(d)
        nodes.append(d)
    ids = {node_id(d) for d in nodes}
    # Every node is a voter (n <= 5) and follows one leader.
    wait_sync(lambda: all(set(ctl(d)["voters"]) == ids and ctl(d)["leader"] for d in nodes),
              timeout_s=20, interval_s=0.1)
    return nodes


_IDS: dict[Path, str] = {}


def node_id(d: Daemon) -> str:
    if d.socket not in _IDS:
        _IDS[d.socket] = str(api(d, "GET", "/v1/status")["node_id"])
    return _IDS[d.socket]


def leader_of(nodes: list[Daemon]) -> Daemon:
    leaders = [d for d in nodes if ctl(d)["role"] == "leader"]
    assert len(leaders) == 1
    return leaders[0]


def placements(d: Daemon, block: str) -> dict[str, str]:
    blocks = api(d, "GET", "/v1/controller/placements")["blocks"]
    return {i["instance_id"]: i["node_id"] for i in blocks.get(block, {}).get("instances", [])}


def echo_docs(block_id: str, instances: int) -> str:
    return echo_block_docs(block_id, instances, SPREAD)


def healthy_here(d: Daemon, block: str) -> set[str]:
    """Instances of `block` this node's supervisor runs healthy."""
    rows = api(d, "GET", "/v1/ps", timeout_s=3.0)["instances"]
    return {r["instance_id"] for r in rows if r["block_id"] == block and r["state"] == "healthy"}


def running_here(d: Daemon, block: str) -> set[str]:
    return {r["instance_id"] for r in api(d, "GET", "/v1/ps", timeout_s=3.0)["instances"] if r["block_id"] == block}


def test_failover_reassignment_and_stale_leader_rejoin(tmp_path: Path, daemons: list[Daemon]) -> None:
    nodes = start_cluster(tmp_path, daemons, 5)
    old = leader_of(nodes)
    old_id, old_term = node_id(old), ctl(old)["term"]
    follower = next(d for d in nodes if d is not old)
    # `aiosd apply --cluster` on a follower: forwarded to the leader, 4 instances over 4 distinct
    # nodes, and each node runs (for real, process driver) what the committed state places on it.
    spec = tmp_path / "echo.json"
    spec.write_text(echo_docs("echo", 4))
    r = follower.cli("apply", "-f", str(spec), "--cluster", "--json")
    assert r.returncode == 0, r.stderr
    doc = next(d for d in json.loads(r.stdout)["documents"] if d["kind"] == "block")
    placed = doc["placement"]["placements"]
    assert len({i["node_id"] for i in placed}) == 4
    wait_sync(lambda: all(len(placements(d, "echo")) == 4 for d in nodes), timeout_s=5)
    before = placements(follower, "echo")
    by_node = {node_id(d): d for d in nodes}
    wait_sync(lambda: all(healthy_here(by_node[n], "echo") >= {i for i, m in before.items() if m == n}
                          for n in set(before.values())), timeout_s=60, interval_s=0.25)
    moved = sorted(i for i, n in before.items() if n == old_id)
    if not moved:  # make sure the leader hosts something, so its death forces a reassignment
        r = follower.cli("mgmt", "echo", "scale", "--json", "--data", '{"instances": 5}')
        assert r.returncode == 0, r.stdout + r.stderr
        before = placements(follower, "echo")
        moved = sorted(i for i, n in before.items() if n == old_id)
        wait_sync(lambda: healthy_here(old, "echo") >= set(moved), timeout_s=60, interval_s=0.25)
    assert moved
    # A node that runs an instance answers an inference; one that runs none forwards it (signed, p2p)
    # to one that does, after checking the packet against the block's input protocol itself.
    host = by_node[before[min(before)]]
    out = api(host, "POST", "/v1/infer/block/echo", {"data": {"message": "hi"}})
    assert "hi" in json.dumps(out["outputs"])
    bare = [d for d in nodes if node_id(d) not in set(before.values())]
    for d in bare:
        out = api(d, "POST", "/v1/infer/block/echo", {"data": {"message": "from afar"}})
        assert "from afar" in json.dumps(out["outputs"]) and out["instance_id"] in before
        with pytest.raises(ApiError) as bad:
            api(d, "POST", "/v1/infer/block/echo", {"data": {"message": 7}})
        assert bad.value.status == 422 and "data.message" in str(bad.value)

    t0 = time.monotonic()
    old.kill9()
    rest = [d for d in nodes if d is not old]

    def new_leader() -> Daemon | None:
        views = [ctl(d) for d in rest]
        lead = [v for v in views if v["role"] == "leader" and v["quorum"] and v["term"] > old_term]
        return next(d for d in rest if node_id(d) == lead[0]["node_id"]) if lead else None

    found = wait_sync(new_leader, timeout_s=3.0, interval_s=0.05)
    assert found is not None
    new = found
    took_leader = time.monotonic() - t0

    # The dead node's instances run (healthy) elsewhere within 10 s, and answer there.
    def moved_and_healthy() -> bool:
        now = placements(new, "echo")
        if set(now) != set(before) or old_id in now.values():
            return False
        return all(i in healthy_here(by_node[now[i]], "echo") for i in moved)

    wait_sync(moved_and_healthy, timeout_s=10.0, interval_s=0.1)
    took_moved = time.monotonic() - t0
    after = placements(new, "echo")
    assert {i: n for i, n in after.items() if i not in moved} == {i: n for i, n in before.items() if i not in moved}
    out = api(by_node[after[moved[0]]], "POST", "/v1/infer/block/echo", {"data": {"message": "again"}})
    assert out["instance_id"] in healthy_here(by_node[after[moved[0]]], "echo")
    # The reassignment is recorded as a task (committed right after the moves).
    wait_sync(lambda: any(t["kind"] == "reassign" and t["state"] == "done" and moved[0] in t["detail"]
                          for t in api(new, "GET", "/v1/controller/tasks")["tasks"]), timeout_s=3)

    # The old leader comes back as a follower of the newer term and stops what was moved away
    # (its instances outlived the kill -9 and were adopted on restart).
    old.start()
    wait_sync(lambda: ctl(old)["role"] == "follower" and ctl(old)["leader"] == node_id(new)
              and ctl(old)["term"] >= ctl(new)["term"], timeout_s=15, interval_s=0.1)
    wait_sync(lambda: not running_here(old, "echo") & set(moved), timeout_s=15, interval_s=0.2)
    wait_sync(lambda: placements(old, "echo") == placements(new, "echo"), timeout_s=15, interval_s=0.2)
    # No instance runs twice: across the cluster, each placed instance runs exactly once.
    runs = [i for d in nodes for i in running_here(d, "echo")]
    assert sorted(runs) == sorted(after), runs
    # Deleting the block anywhere stops it everywhere.
    r = old.cli("delete", "block", "echo", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_sync(lambda: all(not running_here(d, "echo") for d in nodes) and not placements(new, "echo"),
              timeout_s=20, interval_s=0.2)
    print(f"failover: leader in {took_leader:.2f}s, instances answering elsewhere in {took_moved:.2f}s")


def test_partition_majority_schedules_minority_refuses_then_one_history(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    nodes = start_cluster(tmp_path, daemons, 5, env={"AIOSD_TEST_FAULTS": "1"})
    lead = leader_of(nodes)
    minority = [lead, next(d for d in nodes if d is not lead)]
    majority = [d for d in nodes if d not in minority]
    min_ids, maj_ids = [node_id(d) for d in minority], [node_id(d) for d in majority]
    for d in minority:
        api(d, "POST", "/v1/test/faults", {"block": maj_ids})
    for d in majority:
        api(d, "POST", "/v1/test/faults", {"block": min_ids})

    def majority_leader() -> Daemon | None:
        for d in majority:
            v = ctl(d)
            if v["role"] == "leader" and v["quorum"]:
                return d
        return None

    found = wait_sync(majority_leader, timeout_s=10, interval_s=0.1)
    assert found is not None
    new = found
    # The majority keeps scheduling (through any of its nodes).
    api(majority[-1], "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "maj", "count": 2, "allocator": SPREAD})
    assert len(placements(new, "maj")) == 2

    def refused(d: Daemon) -> str | None:
        try:
            api(d, "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "min", "count": 1, "allocator": SPREAD})
        except ApiError as e:
            return str(e) if e.status == 503 else None
        raise AssertionError("a minority node accepted a write")

    for d in minority:
        msg = wait_sync(lambda d=d: refused(d), timeout_s=10, interval_s=0.2)  # type: ignore[misc]  # d bound
        assert msg is not None and "no quorum" in msg
    for d in nodes:
        api(d, "POST", "/v1/test/faults", {"clear": True})
    # After healing: one history. Every node holds the majority's write and never the minority's.
    wait_sync(lambda: len({ctl(d)["commit_index"] for d in nodes}) == 1
              and all(len(placements(d, "maj")) == 2 for d in nodes), timeout_s=20, interval_s=0.2)
    assert all(placements(d, "min") == {} for d in nodes)
    assert len({json.dumps(api(d, "GET", "/v1/controller/placements")["blocks"], sort_keys=True) for d in nodes}) == 1


def test_placement_respects_fake_gpu_inventories(tmp_path: Path, daemons: list[Daemon]) -> None:
    inventories = [
        [{"total_mb": 24000, "used_mb": 20000}, {"total_mb": 24000, "used_mb": 0}],  # one GPU with 10 GB free
        [{"total_mb": 40000, "used_mb": 5000}, {"total_mb": 40000, "used_mb": 8000}],  # two: fits
        [],  # no GPU at all
    ]
    env = []
    for i, gpus in enumerate(inventories):
        f = tmp_path / f"gpus{i}.json"
        f.write_text(json.dumps(gpus))
        env.append({"AIOSD_TEST_GPUS": str(f)})
    nodes = start_cluster(tmp_path, daemons, 3, per_node_env=env)
    fits = node_id(nodes[1])
    # The CLI shows the same controller from every node.
    views = [d.json("controller") for d in nodes]
    assert len({v["leader"] for v in views}) == 1 and all(len(v["voters"]) == 3 for v in views)
    listed = nodes[2].json("cluster", "list")["clusters"]
    assert [(c["name"], c["nodes"], c["leader"]) for c in listed] == [("default", 3, views[0]["leader"])]
    described = nodes[2].json("cluster", "describe", "default")
    assert {n["node_id"] for n in described["nodes"]} == {node_id(d) for d in nodes}
    assert nodes[2].cli("cluster", "describe", "nope").returncode == 1
    gpu2 = {"uri": "policy.resourceAllocator.best-fit:v1",
            "parameters": {"gpus": 2, "min_gpu_free_memory": 10000, "gpu_memory_mb": 1000}}
    dry = api(nodes[0], "POST", "/v1/allocate/dry-run", {"count": 1, "allocator": gpu2})
    scores = {c["node_id"]: c["score"] for c in dry["candidates"]}
    assert scores[fits] == 1.0 and sorted(scores.values()) == [0.0, 0.0, 1.0]
    placed = api(nodes[2], "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "llm", "count": 1, "allocator": gpu2})
    assert [(i["node_id"], sorted(i["gpus"])) for i in placed["instances"]] == [(fits, [0, 1])]
    three = {"uri": gpu2["uri"], "parameters": {"gpus": 3, "min_gpu_free_memory": 10000, "gpu_memory_mb": 1000}}
    with pytest.raises(ApiError) as e:
        api(nodes[0], "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "big", "count": 1, "allocator": three})
    assert e.value.status == 409 and "no node satisfies: 3 GPUs with >= 10000 MB free" in str(e.value)
    assert placements(nodes[0], "big") == {}
    # Bad input names the field and changes nothing; the fault hook is off on ordinary daemons.
    commit = ctl(nodes[0])["commit_index"]
    with pytest.raises(ApiError) as e:
        api(nodes[1], "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "x", "count": -1})
    assert e.value.status == 422 and e.value.field == "count"
    with pytest.raises(ApiError) as e:
        api(nodes[1], "POST", "/v1/controller/placements",
            {"reserve_only": True, "block_id": "x", "count": 1, "allocator": {"uri": "policy.nope:v1"}})
    assert e.value.status == 422 and "policy.nope:v1" in str(e.value)
    assert ctl(nodes[0])["commit_index"] == commit and placements(nodes[0], "x") == {}
    with pytest.raises(ApiError) as e:
        api(nodes[0], "POST", "/v1/test/faults", {"block": [fits]})
    assert e.value.status == 404


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def test_cold_start_of_the_whole_cluster_elects_again_with_no_peer_files(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    ports = {i: _free_port(f"127.0.0.{i + 1}") for i in range(1, 4)}
    first = Daemon(tmp_path, "n1", p2p_host="127.0.0.2", extra=["--p2p-port", str(ports[1])], env=HOLLOW).start()
    daemons.append(first)
    token = json.loads(first.cli("token", "create", "--json", "--uses", "2").stdout)["token"]
    nodes = [first]
    for i in (2, 3):
        assert cli("join", token, "--data-dir", str(tmp_path / f"n{i}"), "--json").returncode == 0
        d = Daemon(tmp_path, f"n{i}", p2p_host=f"127.0.0.{i + 1}", extra=["--p2p-port", str(ports[i])],
                   env=HOLLOW).start()
        daemons.append(d)
        nodes.append(d)
    wait_sync(lambda: all(len(ctl(d)["voters"]) == 3 and ctl(d)["leader"] for d in nodes), timeout_s=20)
    api(nodes[1], "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "keep", "count": 3, "allocator": SPREAD})
    before = placements(nodes[0], "keep")
    wait_sync(lambda: all(placements(d, "keep") == before for d in nodes), timeout_s=5)
    for d in nodes:
        d.kill9()  # a power cut: nobody leaves gracefully
    for d in nodes:
        d.start()
    wait_sync(lambda: sum(ctl(d)["role"] == "leader" and ctl(d)["quorum"] for d in nodes) == 1,
              timeout_s=20, interval_s=0.1)
    # A restarted node re-applies its durable log once it learns the commit index from the leader.
    wait_sync(lambda: all(placements(d, "keep") == before for d in nodes), timeout_s=5)
    api(nodes[2], "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "after", "count": 1, "allocator": SPREAD})


def test_a_cluster_without_a_ca_holder_elects_its_own_controller(tmp_path: Path, daemons: list[Daemon]) -> None:
    ca = Daemon(tmp_path, "n1", p2p_host="127.0.0.2", env=HOLLOW).start()
    daemons.append(ca)
    token = json.loads(ca.cli("token", "create", "--json", "--uses", "3", "--cluster", "lab").stdout)["token"]
    lab = []
    for i in (2, 3, 4):
        assert cli("join", token, "--data-dir", str(tmp_path / f"n{i}"), "--json").returncode == 0
        d = Daemon(tmp_path, f"n{i}", p2p_host=f"127.0.0.{i + 1}", env=HOLLOW).start()
        daemons.append(d)
        lab.append(d)
    lab_ids = {node_id(d) for d in lab}
    # One seed (granted by the CA holder), then the seed's leader adds the others: 3 voters, one leader.
    wait_sync(lambda: all(set(ctl(d)["voters"]) == lab_ids and ctl(d)["leader"] in lab_ids for d in lab),
              timeout_s=20, interval_s=0.1)
    assert len({ctl(d)["leader"] for d in lab}) == 1 and ctl(ca)["voters"] == [node_id(ca)]
    found = {c["name"]: c for c in api(ca, "GET", "/v1/clusters")["clusters"]}
    assert found["lab"]["leader"] in lab_ids and found["lab"]["nodes"] == 3
    assert found["default"]["leader"] == node_id(ca)
    # Placements stay inside the cluster: lab's controller never places on the CA's node.
    placed = api(lab[0], "POST", "/v1/controller/placements", {"reserve_only": True, "block_id": "w", "count": 3, "allocator": SPREAD})
    assert {i["node_id"] for i in placed["instances"]} == lab_ids
    assert placements(ca, "w") == {}

    # A block whose clusterAllocator filters for "lab", applied on the CA's node (cluster default):
    # the gateway dry-runs it in lab, forwards it to lab's leader, and lab's nodes run it.
    def with_cluster_filter(docs: str, value: str) -> str:
        comp, block = (json.loads(x) for x in docs.splitlines())
        block["body"]["spec"]["values"]["policyRulesSpec"].append({"values": {
            "name": "clusterAllocator", "policyRuleURI": "policy.clusterAllocator.filter:v1",
            "parameters": {"filter": {"clusterQuery": {"variable": "id", "operator": "==", "value": value}}},
            "settings": {"max_candidates": 3}}})
        return json.dumps(comp) + "\n" + json.dumps(block)

    spec = tmp_path / "lab-echo.json"
    spec.write_text(with_cluster_filter(echo_docs("lab-echo", 2), "lab"))
    dry = json.loads(ca.cli("apply", "-f", str(spec), "--cluster", "--dry-run", "--json").stdout)
    dry_block = next(d for d in dry["documents"] if d["kind"] == "block")
    assert dry_block["placement"]["clusterId"] == "lab" and dry_block["action"] == "would be created"
    assert {c["node_id"] for c in dry_block["placement"]["candidates"]} == lab_ids
    assert placements(lab[0], "lab-echo") == {}
    r = ca.cli("apply", "-f", str(spec), "--cluster", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = next(d for d in json.loads(r.stdout)["documents"] if d["kind"] == "block")
    assert doc["placement"]["clusterId"] == "lab"
    assert {i["node_id"] for i in doc["placement"]["placements"]} <= lab_ids
    wait_sync(lambda: sum(len(healthy_here(d, "lab-echo")) for d in lab) == 2, timeout_s=60, interval_s=0.25)
    assert placements(ca, "lab-echo") == {} and not running_here(ca, "lab-echo")
    # Inference from the CA's node (cluster default): forwarded to a lab node, relayed inside lab if
    # that node runs none; a bad packet is refused here, against the block's input protocol.
    for _ in range(8):  # the first hop lands on the lab node that runs none 1 time in 3: relayed
        out = ca.json("infer", "lab-echo", "--data", '{"message": "across"}')
        assert out["instance_id"].startswith("lab-echo-") and "across" in json.dumps(out["outputs"])
    bad = ca.cli("infer", "lab-echo", "--data", '{"message": 7}')
    assert bad.returncode != 0 and "data.message" in bad.stderr, bad.stderr
    # Scaled from the CA's node: the request reaches lab's controller.
    r = ca.cli("mgmt", "lab-echo", "scale", "--data", '{"instances": 3}')
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["from"] == 2
    wait_sync(lambda: sum(len(healthy_here(d, "lab-echo")) for d in lab) == 3, timeout_s=60, interval_s=0.25)
    # No cluster matches: nothing changes and the user is told why.
    spec.write_text(with_cluster_filter(echo_docs("nowhere", 1), "mars"))
    r = ca.cli("apply", "-f", str(spec), "--cluster")
    assert r.returncode == 1 and "no cluster satisfies the clusterAllocator filter" in r.stderr, r.stderr
    assert all(placements(d, "nowhere") == {} for d in [ca, *lab])
    # Deleted from the CA's node: lab stops it.
    assert ca.cli("delete", "block", "lab-echo").returncode == 0
    wait_sync(lambda: all(not running_here(d, "lab-echo") for d in lab), timeout_s=20, interval_s=0.2)


def test_gpus_held_by_a_locally_applied_block_are_respected_by_the_cluster_controller(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    """One GPU (fake NVML in the real daemon): a block applied on the node that holds it alone keeps
    the controller off it; blocks that share by memory run side by side on it."""
    gpus = tmp_path / "gpus.json"
    gpus.write_text(json.dumps([{"uuid": "GPU-one", "total_mb": 24000}]))
    (d,) = start_cluster(tmp_path, daemons, 1, per_node_env=[{"AIOSD_TEST_GPUS": str(gpus)}])
    alone = {"uri": "policy.resourceAllocator.best-fit:v1",
             "parameters": {"gpus": 1, "min_gpu_free_memory": 4000, "exclusive_gpus": True}}
    shared = {"uri": "policy.resourceAllocator.best-fit:v1", "parameters": {"gpus": 1, "min_gpu_free_memory": 4000}}
    spec = tmp_path / "spec.json"
    spec.write_text(echo_block_docs("solo", 1, alone))
    r = d.cli("apply", "-f", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    assert [g["holders"] for g in d.json("gpus")["gpus"]] == [["solo-0"]]
    spec.write_text(echo_block_docs("placed", 1, shared))
    commit = ctl(d)["commit_index"]
    r = d.cli("apply", "-f", str(spec), "--cluster")
    assert r.returncode != 0
    assert "no node satisfies: 1 GPU with >= 4000 MB free" in r.stderr and "1 held by other instances" in r.stderr
    assert ctl(d)["commit_index"] == commit and placements(d, "placed") == {}
    assert d.cli("delete", "block", "solo").returncode == 0
    wait_sync(lambda: d.json("gpus")["gpus"][0]["holders"] == [], timeout_s=10)
    r = d.cli("apply", "-f", str(spec), "--cluster", "--json")
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: healthy_here(d, "placed") == {"placed-0"}, timeout_s=30)
    # Memory-shared: a second block applied on the node joins the cluster block on the one GPU.
    spec.write_text(echo_block_docs("beside", 1, shared))
    r = d.cli("apply", "-f", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(d.json("gpus")["gpus"][0]["holders"]) == ["beside-0", "placed-0"]
    # ...but a block that wants a GPU alone now finds none, on either path.
    spec.write_text(echo_block_docs("solo", 1, alone))
    r = d.cli("apply", "-f", str(spec))
    assert r.returncode != 0 and "held by other instances" in r.stderr, r.stderr
    r = d.cli("apply", "-f", str(spec), "--cluster")
    assert r.returncode != 0 and "held by other instances" in r.stderr, r.stderr
