"""The CLI a newcomer meets, as subprocesses against real `aiosd run` daemons (process driver):
global options anywhere, stdlib-only status, stop, doctor, infer inputs, record names, hints."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import AIOSD, Daemon, cli
from tests.instances import kill_process_instances
from tests.waiting import wait_sync

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo"


@pytest.fixture(autouse=True)
def no_leftover_instances(tmp_path: Path) -> Iterator[None]:
    yield
    kill_process_instances(tmp_path)


def start(daemons: list[Daemon], tmp_path: Path, name: str = "n1") -> Daemon:
    d = Daemon(tmp_path, name, extra=["--driver", "process"]).start()
    daemons.append(d)
    return d


def ok(d: Daemon, *args: str, timeout_s: float = 60, input_: str | None = None) -> str:
    r = cli(*args, "--socket", str(d.socket), "--data-dir", str(d.data_dir), timeout_s=timeout_s, input_=input_)
    assert r.returncode == 0, f"aiosd {' '.join(args)} failed ({r.returncode}): {r.stderr}\n{d.logs()[-2000:]}"
    return r.stdout


def test_global_options_before_or_after_and_status_without_daemon_modules(daemons: list[Daemon],
                                                                            tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    s = str(d.socket)
    before = json.loads(cli("--socket", s, "status", "--json").stdout)
    after = json.loads(cli("status", "--socket", s, "--json").stdout)
    assert before["node_id"] == after["node_id"] and before["data_dir"] == str(d.data_dir)
    a = cli("--socket", s, "--json", "token", "create", "--ttl", "5m")
    b = cli("token", "create", "--socket", s, "--json", "--ttl=5m")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout)["token"] != json.loads(b.stdout)["token"]
    assert len(json.loads(cli("token", "--socket", s, "list", "--json").stdout)["tokens"]) == 2
    # `aiosd status --json` answers without aiohttp, pydantic or any daemon module
    r = subprocess.run([sys.executable, "-X", "importtime", *AIOSD[1:], "status", "--json", "--socket", s],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0 and json.loads(r.stdout)["node_id"] == before["node_id"]
    loaded = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    heavy = {m for m in loaded if m.split(".")[0] in ("aiohttp", "pydantic", "lmdb", "nacl", "msgpack", "storage",
                                                       "federation", "runtime")}
    assert not heavy, heavy
    assert "http.client" in loaded


def test_stop_stops_only_this_daemon_and_doctor_calls_one_node_healthy(daemons: list[Daemon],
                                                                     tmp_path: Path) -> None:
    a, b = start(daemons, tmp_path, "a"), start(daemons, tmp_path, "b")
    doc = cli("doctor", "--socket", str(a.socket), "--data-dir", str(a.data_dir))
    assert doc.returncode == 0, doc.stdout + doc.stderr
    assert "single-node network" in doc.stdout and "no problems found" in doc.stdout
    rep = json.loads(cli("doctor", "--json", "--socket", str(a.socket)).stdout)
    assert rep["problems"] == [] and rep["notes"]

    out = json.loads(ok(a, "stop", "--json"))
    assert out["stopped"] is True and out["pid"] == a.pid
    assert a.wait_exit(5) == 0
    assert "stop requested over the API" in a.logs() and "daemon stopped" in a.logs()
    assert b.proc is not None and b.proc.poll() is None
    assert ok(b, "status", "--json")
    again = cli("stop", "--socket", str(a.socket))
    assert again.returncode == 0 and "nothing to stop" in again.stderr
    down = cli("status", "--socket", str(a.socket))
    assert down.returncode == 1 and "`aiosd run`" in down.stderr
    if not any(Path(p).exists() for p in ("/etc/systemd/system/aiosd.service", "/lib/systemd/system/aiosd.service",
                                          "/usr/lib/systemd/system/aiosd.service")):
        assert "systemctl" not in down.stderr
    offline = cli("doctor", "--socket", str(a.socket), "--data-dir", str(a.data_dir))
    assert offline.returncode == 1 and "the daemon is not running" in offline.stdout


def test_infer_inputs_records_and_hints(daemons: list[Daemon], tmp_path: Path) -> None:
    d = start(daemons, tmp_path)
    ok(d, "apply", "-f", str(ECHO))

    # any JSON value, inline, from a file and from stdin
    hi = json.loads(ok(d, "infer", "echo-1", "--data", '"hi"', "--json"))
    assert hi["outputs"][0]["data"] == "hi"
    assert any("input protocol names fields (message)" in w for w in hi["warnings"])
    big = {"message": "x" * 60_000}
    (tmp_path / "big.json").write_text(json.dumps(big))
    assert json.loads(ok(d, "infer", "echo-1", "--data", f"@{tmp_path / 'big.json'}", "--json"))[
        "outputs"][0]["data"] == big
    piped = json.loads(ok(d, "infer", "echo-1", "--data", "-", "--json", input_='{"message": "from stdin"}'))
    assert piped["outputs"][0]["data"] == {"message": "from stdin"} and "warnings" not in piped
    r = cli("infer", "echo-1", "--data", "{}", "--socket", str(d.socket))
    assert r.returncode == 0 and "warning: data.message is not given" in r.stderr

    # one set of names: get/describe/watch; components show their image and the whole record
    comps = ok(d, "get", "components")
    assert "localhost/aiosd-echo:latest" in comps
    whole = json.loads(ok(d, "get", "components", "--json"))["items"][0]
    assert whole["document"]["body"]["spec"]["values"]["componentId"]["name"] == "echo"
    nodes = json.loads(ok(d, "get", "nodes", "--json"))["nodes"]
    assert nodes and nodes == json.loads(ok(d, "nodes", "--json"))["nodes"]
    node_id = nodes[0]["node_id"]
    assert node_id in ok(d, "get", "node", node_id) and node_id in ok(d, "describe", "node", node_id)
    hint = cli("describe", "echo-1", "--socket", str(d.socket))
    assert hint.returncode == 2 and "did you mean `aiosd describe block echo-1`" in hint.stderr
    unknown = cli("describe", "widget", "x", "--socket", str(d.socket))
    assert unknown.returncode == 2 and "unknown kind 'widget'" in unknown.stderr

    watch = subprocess.Popen([*AIOSD, "watch", "blocks", "--count", "1", "--socket", str(d.socket)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # the first read is the baseline
        ok(d, "mgmt", "echo-1", "scale", "--data", '{"instances": 2}')
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    assert out.startswith("put    blocks/echo-1 ")
    wait_sync(lambda: len([i for i in d.json("ps")["instances"] if i["state"] == "healthy"]) == 2, timeout_s=30)

    # an unknown management action is an error (exit 1), a known one is not
    bad = cli("mgmt", "echo-1", "frobnicate", "--socket", str(d.socket))
    assert bad.returncode == 1 and "'frobnicate' failed on 2 instance(s)" in bad.stderr
    assert json.loads(ok(d, "mgmt", "echo-1", "get_count"))["instances"]

    # apply -f DIR: an error names the file as well as documents[i]
    bad_dir = tmp_path / "specs"
    bad_dir.mkdir()
    (bad_dir / "component.json").write_text((ECHO / "component.json").read_text())
    block = json.loads((ECHO / "block.json").read_text())
    block["body"]["spec"]["values"]["minInstances"] = "many"
    (bad_dir / "block.json").write_text(json.dumps(block))
    r = cli("apply", "-f", str(bad_dir), "--socket", str(d.socket))
    assert r.returncode == 2 and "documents[1]" in r.stderr and str(bad_dir / "block.json") in r.stderr, r.stderr
    (bad_dir / "block.json").write_text("{oops")
    r = cli("apply", "-f", str(bad_dir), "--socket", str(d.socket))
    assert r.returncode == 2 and str(bad_dir / "block.json") in r.stderr and "line 1" in r.stderr
