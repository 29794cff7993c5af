"""The main job on one node, through the CLI against a real daemon (process driver):
AIOS specs in → blocks running → answers out → scale → delete, plus the bad-input paths."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
import pytest

from tests.daemons import Daemon
from tests.instances import kill_process_instances
from tests.waiting import wait_sync

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo"
AIOS = Path("/work/shared/reference/aios-examples")
if not AIOS.is_dir():
    AIOS = ROOT / "shared" / "reference" / "aios-examples"


@pytest.fixture(autouse=True)
def no_leftover_instances(tmp_path: Path) -> Iterator[None]:
    """Instances outlive a stopped daemon (for adoption): kill what a test left under its tmp_path."""
    yield
    kill_process_instances(tmp_path)


def start(daemons: list[Daemon], tmp_path: Path, name: str = "n1") -> Daemon:
    d = Daemon(tmp_path, name, extra=["--driver", "process"]).start()
    daemons.append(d)
    return d


def ok(d: Daemon, *args: str, timeout_s: float = 60) -> str:
    r = d.cli(*args, timeout_s=timeout_s)
    assert r.returncode == 0, f"aiosd {' '.join(args)} failed ({r.returncode}): {r.stderr}\n{d.logs()[-3000:]}"
    return r.stdout


def instances(d: Daemon, block: str) -> list[dict[str, Any]]:
    return [i for i in d.json("ps")["instances"] if i["block_id"] == block]


def healthy(d: Daemon, block: str) -> int:
    return sum(1 for i in instances(d, block) if i["state"] == "healthy")


def infer(d: Daemon, block: str, data: Any, *extra: str) -> dict[str, Any]:
    out = ok(d, "infer", block, "--data", json.dumps(data), "--json", *extra)
    return dict(json.loads(out))


def test_echo_apply_infer_scale_delete(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    out = ok(d, "apply", "-f", str(ECHO / "component.json"), "-f", str(ECHO / "block.json"))
    assert "component model.echo:1.0.0-stable created" in out and "block echo-1 created" in out
    assert "1/1 healthy" in out and out.rstrip().endswith("ready")
    tasks = d.json("tasks")
    assert [t["state"] for t in tasks] == ["succeeded"] and tasks[0]["target"] == "echo-1"

    blob = bytes(range(256)) * 40
    (tmp_path / "f.bin").write_bytes(blob)
    ans = infer(d, "echo-1", {"message": "hello"}, "--file", str(tmp_path / "f.bin"))
    o = ans["outputs"][0]
    assert o["data"] == {"message": "hello"} and o["prefix"] == "echo: "
    assert o["files"][0]["size"] == len(blob) and o["files"][0]["sha256"] == hashlib.sha256(blob).hexdigest()

    again = ok(d, "apply", "-f", str(ECHO))  # the directory: same documents
    assert "component model.echo:1.0.0-stable unchanged" in again and "block echo-1 unchanged" in again
    assert len(d.json("tasks")) == 1  # nothing to do, no task

    ok(d, "mgmt", "echo-1", "scale", "--data", '{"instances": 3}')
    wait_sync(lambda: healthy(d, "echo-1") == 3, timeout_s=30)
    assert d.json("get", "block", "echo-1")["desiredInstances"] == 3
    bad = d.cli("mgmt", "echo-1", "scale", "--data", '{"instances": 4}')
    assert bad.returncode != 0 and "mgmtData.instances" in bad.stderr and "1..3" in bad.stderr
    assert len(instances(d, "echo-1")) == 3

    upd = json.loads(ok(d, "mgmt", "echo-1", "setParameters", "--data", '{"prefix": ">> "}'))
    assert sorted(upd["instances"]) == ["echo-1-0", "echo-1-1", "echo-1-2"]
    assert all(a["ok"] for a in upd["instances"].values())
    assert {infer(d, "echo-1", {"message": str(i)})["outputs"][0]["prefix"] for i in range(6)} == {">> "}
    counts = json.loads(ok(d, "mgmt", "echo-1", "get_count"))["instances"]
    assert sum(a["result"]["count"] for a in counts.values()) >= 6

    ok(d, "mgmt", "echo-1", "scale", "--data", '{"instances": 1}')
    wait_sync(lambda: len(instances(d, "echo-1")) == 1, timeout_s=30)

    pids = [int(i["handle"]) for i in instances(d, "echo-1")]
    ok(d, "delete", "block", "echo-1")
    assert instances(d, "echo-1") == []
    assert d.json("get", "blocks")["items"] == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    missing = d.cli("infer", "echo-1", "--data", "{}")
    assert missing.returncode != 0 and "no block 'echo-1'" in missing.stderr
    ok(d, "delete", "component", "model.echo:1.0.0-stable")
    assert d.json("get", "components")["items"] == []


def test_dry_run_shows_placement_and_changes_nothing(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    out = ok(d, "apply", "-f", str(ECHO), "--dry-run")
    assert "block echo-1 would be created" in out and "candidate" in out and "score 1.00" in out
    doc = json.loads(ok(d, "apply", "-f", str(ECHO), "--dry-run", "--json"))
    blk = next(x for x in doc["documents"] if x["kind"] == "block")
    assert blk["placement"]["candidates"][0]["score"] == 1.0 and doc["task"] is None
    assert d.json("get", "blocks")["items"] == [] and d.json("get", "components")["items"] == []
    assert d.json("ps")["instances"] == [] and d.json("tasks") == []


def test_component_policy_and_protocol_problems_name_their_paths(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    block = json.loads((ECHO / "block.json").read_text())
    block["body"]["spec"]["values"]["policyRulesSpec"][0]["values"]["policyRuleURI"] = "policy.nope:v9"
    block["body"]["spec"]["values"]["parameters"]["prefix"] = 7
    (tmp_path / "b.json").write_text(json.dumps(block))
    r = d.cli("apply", "-f", str(ECHO / "component.json"), "-f", str(tmp_path / "b.json"))
    assert r.returncode == 2, r.stderr
    assert "documents[1].body.spec.values.policyRulesSpec[0].values.policyRuleURI: policy 'policy.nope:v9' " \
           "is not registered; registered: " in r.stderr
    assert "policy.resourceAllocator.cpu:v1" in r.stderr and "parameters.prefix" in r.stderr
    assert d.json("get", "components")["items"] == []  # all or nothing: the good component is not stored


def test_aios_examples_fail_only_for_policies_and_images(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    for block in sorted(AIOS.glob("*_block.json")):
        comp = block.with_name(block.name.replace("_block", "_component"))
        r = d.cli("apply", "-f", str(comp), "-f", str(block))
        assert r.returncode == 2 and "Traceback" not in r.stderr
        lines = [x for x in r.stderr.removeprefix("aiosd: error: ").splitlines() if x]
        assert lines and all("is not registered; registered: " in x for x in lines), r.stderr
        dry = d.cli("apply", "-f", str(comp), "-f", str(block), "--dry-run", "--aios-example-overrides")
        assert dry.returncode == 0, dry.stderr
        assert "would be created" in dry.stdout and "candidate" in dry.stdout
        real = d.cli("apply", "-f", str(comp), "-f", str(block), "--aios-example-overrides")
        assert real.returncode == 2 and "image 'registry.ai-platform.com/" in real.stderr, real.stderr
    vdag = d.cli("apply", "-f", str(AIOS / "vdag-pose-estimation_vdag.json"))
    # vDAGs apply now (issue 15): refused here because the blocks it names were never applied.
    assert vdag.returncode == 2 and "no block 'object-det-1' is known" in vdag.stderr, vdag.stderr
    assert d.json("get", "components")["items"] == [] and d.json("get", "blocks")["items"] == []


def test_bad_input_is_one_clear_sentence(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    r = d.cli("get", "widgets")
    assert r.returncode == 2 and "unknown kind 'widgets'" in r.stderr
    r = d.cli("apply", "-f", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "broken.json").write_text('{"header": {"templateUri": "Parser/V1"},\n "body": {')
    r = d.cli("apply", "-f", str(tmp_path / "broken.json"))
    assert r.returncode == 2 and "line 2" in r.stderr and "Traceback" not in r.stderr
    r = d.cli("infer", "nope", "--data", "not json")
    assert r.returncode == 2 and "--data is not valid JSON" in r.stderr

    ok(d, "apply", "-f", str(ECHO))
    r = d.cli("infer", "echo-1", "--data", '{"raise": "boom"}')
    assert r.returncode != 0 and "block 'echo-1'" in r.stderr and "RuntimeError" in r.stderr and "boom" in r.stderr
    r = d.cli("infer", "echo-1", "--data", '{"message": 5}')
    assert r.returncode != 0 and "data.message" in r.stderr
    assert infer(d, "echo-1", {"message": "still here"})["outputs"][0]["data"] == {"message": "still here"}
    assert [i["restarts"] for i in instances(d, "echo-1")] == [0]


SLOW_BLOCK = '''
import json, time
from sdk import Block, OnDataResult, PreProcessResult

class Slow:
    def __init__(self, context):
        self.context = context

    def on_preprocess(self, packet):
        return True, [PreProcessResult(packet=packet, extra_data={})]

    def on_data(self, entry):
        d = json.loads(entry.packet.data or "{}")
        time.sleep(float(d.get("work_s", 0)))  # simulated model time: the load the autoscaler sees
        return True, OnDataResult(output={"done": True})

    def health(self):
        return not self.context.block_init_data.get("sick", False)

    def management(self, action, data):
        return {}

    def get_muxer(self):
        return None

if __name__ == "__main__":
    Block(Slow).run()
'''


def slow_specs(tmp_path: Path) -> Path:
    bdir = tmp_path / "slow"
    bdir.mkdir()
    (bdir / "block.py").write_text(SLOW_BLOCK)
    comp = json.loads((ECHO / "component.json").read_text())
    v = comp["body"]["spec"]["values"]
    v["componentId"]["name"] = "slow"
    v["containerRegistryInfo"]["containerImage"] = "localhost/aiosd-slow:latest"
    v["componentMetadata"]["blockDir"] = str(bdir)
    v["componentInputProtocol"] = {}
    block = json.loads((ECHO / "block.json").read_text())
    b = block["body"]["spec"]["values"]
    b.update(blockId="slow-1", blockComponentURI="model.slow:1.0.0-stable", minInstances=1, maxInstances=3)
    b["policyRulesSpec"] = [{"values": {"name": "autoscaler", "policyRuleURI": "policy.autoscaler.queue:v1",
                                        "parameters": {"max_queue": 2},
                                        "settings": {"intervalSeconds": 0.5, "scale_up_cooldown": 0,
                                                     "scale_down_cooldown": 1}}}]
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(comp) + "\n" + json.dumps(block))
    return path


async def test_autoscaler_follows_load_within_min_max(daemons: list[Daemon], tmp_path: Path) -> None:
    import asyncio

    from aiosd.client import Client
    from tests.waiting import eventually

    d = start(daemons, tmp_path)
    ok(d, "apply", "-f", str(slow_specs(tmp_path)))
    assert len(instances(d, "slow-1")) == 1
    seen: set[int] = set()
    stop = asyncio.Event()

    async def load(c: Client) -> None:
        while not stop.is_set():
            await c.post("/v1/infer/block/slow-1", {"data": {"work_s": 0.2}})

    async with Client(d.socket, timeout_s=60) as c:
        async def count() -> int:
            n = len([i for i in (await c.get("/v1/ps"))["instances"] if i["block_id"] == "slow-1"])
            seen.add(n)
            return n

        workers = [asyncio.create_task(load(c)) for _ in range(12)]
        try:
            await eventually(lambda: count_is(count, 3), timeout_s=30, interval_s=0.1)
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
        await eventually(lambda: count_is(count, 1), timeout_s=30, interval_s=0.1)
    assert seen <= {1, 2, 3}
    desc = d.json("get", "block", "slow-1")
    assert desc["desiredInstances"] == 1


async def count_is(count: Any, n: int) -> bool:
    return bool(await count() == n)


def test_text_stats_example_answers_and_updates_live(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    ok(d, "apply", "-f", str(ROOT / "examples" / "text-stats"))
    o = infer(d, "text-stats-1", {"text": "The cat sat. The cat ran! Dogs bark."})["outputs"][0]
    assert (o["words"], o["sentences"], o["top_words"][0]) == (8, 3, ["cat", 2])
    assert len(o["top_words"]) == 3  # the block's parameters.top_k
    (tmp_path / "t.txt").write_text("alpha beta beta. gamma")
    two = infer(d, "text-stats-1", {"text": "one"}, "--file", str(tmp_path / "t.txt"))["outputs"]
    assert [x["words"] for x in two] == [1, 4]
    bad = d.cli("mgmt", "text-stats-1", "setParameters", "--data", '{"top_k": 0}')
    assert bad.returncode != 0 and "mgmtData.top_k" in bad.stderr
    ok(d, "mgmt", "text-stats-1", "setParameters", "--data", '{"top_k": 1}')
    assert infer(d, "text-stats-1", {"text": "b a b c"})["outputs"][0]["top_words"] == [["b", 2]]
    assert d.json("get", "block", "text-stats-1")["parameters"]["top_k"] == 1


def test_daemon_restart_keeps_blocks_and_adopts_instances(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    ok(d, "apply", "-f", str(ECHO))
    ok(d, "mgmt", "echo-1", "setParameters", "--data", '{"prefix": "kept: "}')
    before = {i["instance_id"]: i["handle"] for i in instances(d, "echo-1")}
    assert d.stop() == 0
    d.start()
    wait_sync(lambda: healthy(d, "echo-1") == 1, timeout_s=30)
    assert {i["instance_id"]: i["handle"] for i in instances(d, "echo-1")} == before  # adopted, not restarted
    assert infer(d, "echo-1", {"message": "again"})["outputs"][0]["prefix"] == "kept: "
    assert "block echo-1 unchanged" in ok(d, "apply", "-f", str(ECHO))


def test_stability_policy_gives_up_and_reports(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    text = slow_specs(tmp_path).read_text().splitlines()
    block = json.loads(text[1])
    v = block["body"]["spec"]["values"]
    v.update(blockId="sick-1", blockInitData={"sick": True})
    v["policyRulesSpec"] = [{"values": {"name": "stabilityChecker", "policyRuleURI": "policy.health.retry:v1",
                                        "parameters": {"unhealthy_threshold": 2, "max_restarts": 0},
                                        "settings": {"health_check_interval": 0.2}}}]
    (tmp_path / "sick.json").write_text(text[0] + "\n" + json.dumps(block))
    out = ok(d, "apply", "-f", str(tmp_path / "sick.json"), "--no-wait")
    assert "block sick-1 created" in out and "task t-" in out
    given_up = wait_sync(lambda: d.json("get", "block", "sick-1")["status"]["givenUp"], timeout_s=20)
    assert list(given_up) == ["sick-1-0"] and "after 0 restarts" in given_up["sick-1-0"]
    assert healthy(d, "sick-1") == 0
    assert "sick-1-0" in ok(d, "describe", "block", "sick-1")
    assert "instance given up" in d.logs()
