"""Policies, templates, specs and the governance map are network records: pushed on one daemon,
usable on another (the archive is fetched from the publisher and verified), writable only by admins."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiosd.policies.service import sandbox_root
from tests.daemons import Daemon, start_network
from tests.instances import echo_block_docs
from tests.integration.test_policy_governance import PRECHECK
from tests.waiting import wait_sync

ROOT = Path(__file__).resolve().parents[2]
LB = "policy.loadBalancer.least-busy:v1-stable"
ENV = {"AIOSD_REPLICATION_PROFILE": "test", "AIOSD_MEMBERSHIP_PROFILE": "test"}
pytestmark = pytest.mark.timeout(180)
ALWAYS_A = '''
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass
    def eval(self, parameters, input_data, context):
        return {"instance_id": "a"}
'''


@pytest.fixture(autouse=True)
def _sandbox_cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    for n in ("n1", "n2"):
        shutil.rmtree(sandbox_root(tmp_path / n), ignore_errors=True)


def test_records_pushed_on_one_node_are_usable_on_another(tmp_path: Path, daemons: list[Daemon]) -> None:
    nodes = start_network(tmp_path, 2, env=ENV)
    daemons.extend(nodes)
    n1, n2 = nodes
    pushed = n1.json("policy", "push", str(ROOT / "examples" / "policies" / "least-busy"), "--uri", LB)
    archive = n2.data_dir / "blobs" / "sha256" / pushed["archive_sha256"][:2] / pushed["archive_sha256"]
    wait_sync(lambda: [p["uri"] for p in n2.json("policy", "list")["policies"]] == [LB], timeout_s=20)
    assert not archive.exists()
    # n2 runs it: the archive comes from n1, checked against the signed record, then kept here.
    inp = json.dumps({"instances": [{"instance_id": "a", "outstanding": 3}, {"instance_id": "b", "outstanding": 1}]})
    r = n2.cli("policy", "run", LB, "--input", inp)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"instance_id": "b"} and archive.exists()

    (tmp_path / "gov" / "code").mkdir(parents=True)
    (tmp_path / "gov" / "code" / "function.py").write_text(PRECHECK)
    n1.json("policy", "push", str(tmp_path / "gov"), "--uri", "gov.blocks:v1-a")
    wait_sync(lambda: len(n2.json("policy", "list")["policies"]) == 2, timeout_s=20)
    n1.json("governance", "set", "add_block", "gov.blocks:v1-a")
    wait_sync(lambda: n2.json("governance", "show")["actionsPolicyMap"] == {"add_block": "gov.blocks:v1-a"},
              timeout_s=20)
    veto = n2.cli("governance", "check", "add_block", "--payload", '{"name": "forbidden-x"}')
    assert veto.returncode == 1 and "refused by the pre-check policy gov.blocks:v1-a" in veto.stderr

    # A joined node holds a member certificate: it uses records but cannot publish them.
    refused = n2.cli("policy", "push", str(ROOT / "examples" / "policies" / "least-busy"), "--uri", "x.lb:v1-a")
    assert refused.returncode != 0 and "admin certificate" in refused.stderr, refused.stderr
    assert len(n1.json("policy", "list")["policies"]) == 2
    # A published resourceAllocator places a cluster block from the node that did not push it; the
    # leader (either node) loads the same policy.
    alloc = "policy.resourceAllocator.fewest-instances:v1-stable"
    n1.json("policy", "push", str(ROOT / "examples" / "policies" / "fewest-instances"), "--uri", alloc)
    wait_sync(lambda: alloc in [p["uri"] for p in n2.json("policy", "list")["policies"]], timeout_s=20)
    spec = tmp_path / "echo.json"
    spec.write_text(echo_block_docs("spread-echo", 2, {"uri": alloc, "parameters": {"cpus": 0.1}}))
    r = n2.cli("apply", "-f", str(spec), "--cluster", "--json", timeout_s=60)
    assert r.returncode == 0, r.stderr

    def healthy() -> int:
        return sum(1 for d in nodes for i in d.json("ps")["instances"]
                   if i["block_id"] == "spread-echo" and i["state"] == "healthy")

    wait_sync(lambda: healthy() == 2, timeout_s=60)
    assert n2.cli("delete", "block", "spread-echo").returncode == 0
    # Re-pushed on the publisher with other code: the new code answers on n2 and n2's warm worker of
    # the old archive is stopped (the record changed under it).
    (tmp_path / "lb2" / "code").mkdir(parents=True)
    (tmp_path / "lb2" / "code" / "function.py").write_text(ALWAYS_A)
    n1.json("policy", "push", str(tmp_path / "lb2"), "--uri", LB)
    wait_sync(lambda: json.loads(n2.cli("policy", "run", LB, "--input", inp).stdout or "{}") == {"instance_id": "a"},
              timeout_s=20)
    # the old archive's worker stops (its record changed; the stop runs beside the new call)
    wait_sync(lambda: len(n2.json("policy", "describe", LB)["instances"]) == 1, timeout_s=10, interval_s=0.2)
    # Deleting on the publisher removes it everywhere.
    assert n1.cli("policy", "delete", LB).returncode == 0
    wait_sync(lambda: LB not in [p["uri"] for p in n2.json("policy", "list")["policies"]], timeout_s=20)
