"""`aiosd policy|template|spec` against a real daemon: push a custom load balancer from a directory,
run it, describe/list/delete; a hostile policy gives a clear error and the daemon keeps answering."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiosd.policies.service import sandbox_root
from tests.daemons import Daemon
from tests.instances import echo_block_docs
from tests.integration.test_policy_governance import PRECHECK
from tests.integration.test_policy_sandbox import HOSTILE
from tests.waiting import wait_sync

ROOT = Path(__file__).resolve().parents[2]
from aiosd.specs.mgmt import BLOCK_SERVICES

SERVICE = min(BLOCK_SERVICES)
LB = "policy.loadBalancer.least-busy:v1-stable"


@pytest.fixture(autouse=True)
def _sandbox_cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(sandbox_root(tmp_path / "n1"), ignore_errors=True)


def test_push_run_describe_list_delete_and_hostile(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path)
    daemons.append(d.start())
    pushed = d.json("policy", "push", str(ROOT / "examples" / "policies" / "least-busy"), "--uri", LB)
    assert pushed["uri"] == LB and len(pushed["archive_sha256"]) == 64
    inp = json.dumps({"instances": [{"instance_id": "a", "outstanding": 3}, {"instance_id": "b", "outstanding": 1}]})
    r = d.cli("policy", "run", LB, "--input", inp)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"instance_id": "b"}
    assert d.json("policy", "mgmt", LB, "stats")["result"] == {"picks": {"b": 1}}
    bad = d.cli("policy", "run", LB, "--input", '{"instances": "nope"}')
    assert bad.returncode == 2 and "input.instances: must be an array" in bad.stderr
    desc = d.json("policy", "describe", LB)
    assert desc["tags"] == ["loadBalancer", "example"] and desc["instances"][0]["calls"] >= 1
    assert [p["uri"] for p in d.json("policy", "list")["policies"]] == [LB]

    (tmp_path / "hostile" / "code").mkdir(parents=True)
    (tmp_path / "hostile" / "code" / "function.py").write_text(HOSTILE)
    d.json("policy", "push", str(tmp_path / "hostile"), "--uri", "test.hostile:v1-a")
    hang = d.cli("policy", "run", "test.hostile:v1-a", "--input", '{"mode": "loop"}', "--timeout", "0.5")
    assert hang.returncode == 1 and "no answer within 0.5 s" in hang.stderr
    died = d.cli("policy", "run", "test.hostile:v1-a", "--input", '{"mode": "exit"}')
    assert died.returncode == 1 and "worker died" in died.stderr and "exit code 7" in died.stderr
    key = d.data_dir / "identity" / "node.key"
    leak = d.cli("policy", "run", "test.hostile:v1-a", "--input", json.dumps({"mode": "read", "path": str(key)}))
    assert leak.returncode == 1 and "PermissionError" in leak.stderr
    nondict = d.cli("policy", "run", "test.hostile:v1-a", "--input", '{"mode": "nondict"}')
    assert nondict.returncode == 1 and "expected a JSON object" in nondict.stderr
    alloc = d.cli("policy", "run", "test.hostile:v1-a", "--input", '{"mode": "alloc"}')
    assert alloc.returncode == 1 and "MemoryError" in alloc.stderr
    (tmp_path / "broken" / "code").mkdir(parents=True)
    (tmp_path / "broken" / "code" / "function.py").write_text("import no_such_module_here\n")
    d.json("policy", "push", str(tmp_path / "broken"), "--uri", "test.broken:v1-a")
    broken = d.cli("policy", "run", "test.broken:v1-a", "--input", "{}")
    assert broken.returncode == 1 and "could not be loaded: ModuleNotFoundError" in broken.stderr
    assert d.json("status")["node_id"]  # the daemon still answers

    missing = d.cli("policy", "describe", "no.such:v1")
    assert missing.returncode == 1 and "not registered" in missing.stderr
    assert d.json("policy", "delete", LB)["deleted"] == LB
    assert d.cli("policy", "run", LB, "--input", inp).returncode == 1


def test_templates_spec_store_and_governance(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path)
    daemons.append(d.start())
    conv = tmp_path / "conv" / "code"
    conv.mkdir(parents=True)
    (conv / "function.py").write_text(
        "class AIOSv1PolicyRule:\n"
        "    def __init__(self, rule_id, settings, parameters):\n        pass\n"
        "    def eval(self, parameters, input_data, context):\n"
        "        short = input_data['document']['body']\n"
        "        return {'header': {'templateUri': 'Parser/V1'}, 'body': {'spec': {'values': {\n"
        "            'service': short['service'], 'mgmtCommand': short['command'], 'blockId': short['block'], 'mgmtData': {}}}}}\n")
    d.json("policy", "push", str(tmp_path / "conv"), "--uri", "templates.short-mgmt:v1-stable")
    (tmp_path / "t.json").write_text(json.dumps({"templateUri": "ShortMgmt/V1:v1",
                                                 "templatePolicyRuleUri": "templates.short-mgmt:v1-stable",
                                                 "templateName": "short mgmt"}))
    assert d.json("template", "push", str(tmp_path / "t.json"))["templateUri"] == "ShortMgmt/V1:v1"
    assert [t["templateUri"] for t in d.json("template", "list")["templates"]] == ["ShortMgmt/V1:v1"]
    doc = {"header": {"templateUri": "ShortMgmt/V1:v1"}, "body": {"command": "scale", "block": "b1", "service": SERVICE}}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    stored = d.json("spec", "push", str(tmp_path / "s.json"), "--uri", "specs.scale-b1:v1-a", "--type", "mgmtCommand")
    assert stored["specUri"] == "specs.scale-b1:v1-a"
    assert [s["specUri"] for s in d.json("spec", "list")["specs"]] == ["specs.scale-b1:v1-a"]
    (tmp_path / "bad.json").write_text(json.dumps({"header": {"templateUri": "Nope/V9:v1"}, "body": {}}))
    bad = d.cli("spec", "push", str(tmp_path / "bad.json"), "--uri", "specs.bad:v1")
    assert bad.returncode == 2 and "not in the template store" in bad.stderr
    assert d.json("spec", "list")["specs"][0]["specUri"] == "specs.scale-b1:v1-a"  # nothing changed

    (tmp_path / "gov" / "code").mkdir(parents=True)
    (tmp_path / "gov" / "code" / "function.py").write_text(PRECHECK)
    d.json("policy", "push", str(tmp_path / "gov"), "--uri", "gov.blocks:v1-a")
    refused = d.cli("governance", "set", "add_block", "gov.none:v1")
    assert refused.returncode == 2 and "actionsPolicyMap.add_block" in refused.stderr
    d.json("governance", "set", "add_block", "gov.blocks:v1-a")
    assert d.json("governance", "show")["actionsPolicyMap"] == {"add_block": "gov.blocks:v1-a"}
    assert d.json("governance", "check", "add_block", "--payload", '{"maxInstances": 9}')["payload"] == {
        "maxInstances": 4}
    veto = d.cli("governance", "check", "add_block", "--payload", '{"name": "forbidden-x"}')
    assert veto.returncode == 1 and "refused by the pre-check policy gov.blocks:v1-a" in veto.stderr
    in_use = d.cli("policy", "delete", "gov.blocks:v1-a")
    assert in_use.returncode == 1 and "actionsPolicyMap.add_block" in in_use.stderr


GATE = '''
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass
    def eval(self, parameters, input_data, context):
        p = dict(input_data["payload"])
        if input_data["action"] == "add_block" and p["block_id"].startswith("forbidden"):
            return {"allowed": False, "reason": "no forbidden blocks here"}
        if input_data["action"] == "scale_block":
            p["instances"] = min(p["instances"], 2)
        return {"allowed": True, "payload": p}
'''


def test_blocks_use_published_policies_stored_specs_and_governance(tmp_path: Path, daemons: list[Daemon]) -> None:
    """A block whose loadBalancer is a pushed policy: every task goes where that policy says; a block
    applied from the spec store; governance vetoes an apply and caps a scale."""
    d = Daemon(tmp_path)
    daemons.append(d.start())
    d.json("policy", "push", str(ROOT / "examples" / "policies" / "least-busy"), "--uri", LB)
    docs = [json.loads(x) for x in echo_block_docs("lb-echo", 2, {"uri": "policy.resourceAllocator.cpu:v1",
                                                                   "parameters": {"cpus": 0.1}}).splitlines()]
    block = docs[1]
    block["body"]["spec"]["values"]["policyRulesSpec"].append(
        {"values": {"name": "loadBalancer", "policyRuleURI": LB, "parameters": {}, "settings": {}}})
    (tmp_path / "comp.json").write_text(json.dumps(docs[0]))
    assert d.cli("apply", "-f", str(tmp_path / "comp.json")).returncode == 0
    # The block comes from the spec store, not a file.
    (tmp_path / "block.json").write_text(json.dumps(block))
    d.json("spec", "push", str(tmp_path / "block.json"), "--uri", "specs.lb-echo:v1-a", "--type", "block")
    r = d.cli("apply", "--spec-uri", "specs.lb-echo:v1-a", timeout_s=120)
    assert r.returncode == 0 and "ready" in r.stdout, r.stdout + r.stderr
    # least-busy: no task in flight anywhere -> ties broken by id -> always the first instance.
    answered = {d.json("infer", "lb-echo", "--data", '{"message": "x"}')["instance_id"] for _ in range(6)}
    assert answered == {"lb-echo-0"}
    # No -f and no --spec-uri, or an unknown stored spec: clear errors.
    assert "one of them" in d.cli("apply").stderr
    assert "no spec" in d.cli("apply", "--spec-uri", "specs.nope:v1").stderr
    # A document of a template that is not in the template store is refused at apply, naming it.
    (tmp_path / "odd.json").write_text(json.dumps({"header": {"templateUri": "Odd/V1:v1"}, "body": {}}))
    odd = d.cli("apply", "-f", str(tmp_path / "odd.json"))
    assert odd.returncode == 2 and "not in the template store" in odd.stderr, odd.stderr
    # Governance: add_block vetoes forbidden-*, scale_block caps at 2 instances.
    (tmp_path / "gate" / "code").mkdir(parents=True)
    (tmp_path / "gate" / "code" / "function.py").write_text(GATE)
    d.json("policy", "push", str(tmp_path / "gate"), "--uri", "gov.gate:v1-a")
    for action in ("add_block", "scale_block"):
        d.json("governance", "set", action, "gov.gate:v1-a")
    block["body"]["spec"]["values"]["blockId"] = "forbidden-echo"
    (tmp_path / "forbidden.json").write_text(json.dumps(block))
    veto = d.cli("apply", "-f", str(tmp_path / "forbidden.json"))
    assert veto.returncode == 1 and "no forbidden blocks here" in veto.stderr, veto.stderr
    assert d.cli("describe", "block", "forbidden-echo").returncode == 1  # nothing stored
    scaled = json.loads(d.cli("mgmt", "lb-echo", "scale", "--data", '{"instances": 4}').stdout)
    assert scaled["to"] == 2
    # A published autoscaler runs in the sandbox and its decisions change the instance count.
    (tmp_path / "up" / "code").mkdir(parents=True)
    (tmp_path / "up" / "code" / "function.py").write_text(
        "class AIOSv1PolicyRule:\n"
        "    def __init__(self, rule_id, settings, parameters):\n        pass\n"
        "    def eval(self, parameters, input_data, context):\n"
        "        return {'skip': False, 'operation': 'upscale', 'instances_count': 1, 'reason': 'always up'}\n")
    d.json("policy", "push", str(tmp_path / "up"), "--uri", "test.always-up:v1-a")
    auto = json.loads(echo_block_docs("auto-echo", 1, {"uri": "policy.resourceAllocator.cpu:v1",
                                                        "parameters": {"cpus": 0.1}}).splitlines()[1])
    auto["body"]["spec"]["values"]["policyRulesSpec"].append({"values": {
        "name": "autoscaler", "policyRuleURI": "test.always-up:v1-a", "parameters": {},
        "settings": {"intervalSeconds": 1}}})
    (tmp_path / "auto.json").write_text(json.dumps(auto))
    r = d.cli("apply", "-f", str(tmp_path / "auto.json"), timeout_s=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # It always says "up": the count climbs to maxInstances (1 + 2) and stops there.
    wait_sync(lambda: len(d.json("describe", "block", "auto-echo")["status"]["instances"]) == 3, timeout_s=30,
              interval_s=0.5)
    assert "always up" in d.json("describe", "block", "auto-echo")["status"]["autoscaler"]
