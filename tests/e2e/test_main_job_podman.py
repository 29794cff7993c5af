"""The main job with real Podman: apply echo → infer → scale → delete, containers gone.

Skipped with the reason when podman or runc is missing. The base image is built once
(`aiosd image build-base` reuses its cache); the echo image is built by the apply task itself
when absent (examples/echo is found from the image name, docs/blocks.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, cli
from tests.instances import remove_node_containers
from tests.waiting import wait_sync

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "echo"
pytestmark = pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                                reason="podman and runc are not installed (apt-get install podman runc)")


@pytest.fixture(autouse=True)
def no_leftover_containers(daemons: list[Daemon]) -> Iterator[None]:
    """Containers outlive a stopped daemon (for adoption): remove what this test's nodes started."""
    yield
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            remove_node_containers(d.json("status")["node_id"])


def containers(block: str) -> list[str]:
    r = subprocess.run(["podman", "ps", "-a", "--filter", f"label=aiosd.block={block}", "--format", "{{.ID}}"],
                       check=False, capture_output=True, text=True, timeout=60)
    return r.stdout.split()


def test_echo_in_containers_apply_infer_scale_delete(daemons: list[Daemon], tmp_path: Path) -> None:
    base = cli("image", "build-base", "--data-dir", str(tmp_path / "img"), "--json", timeout_s=900)
    if base.returncode != 0:
        pytest.skip(f"the base image cannot be built here: {base.stderr.strip()[-300:]}")
    d = Daemon(tmp_path, "p1", extra=["--driver", "podman"]).start(timeout_s=60)
    daemons.append(d)
    r = d.cli("apply", "-f", str(ECHO), timeout_s=600)
    assert r.returncode == 0, r.stderr + d.logs()[-3000:]
    assert "1/1 healthy" in r.stdout
    ps = d.json("ps")
    assert ps["driver"] == "podman" and len(ps["instances"]) == 1
    assert len(containers("echo-1")) == 1

    r = d.cli("infer", "echo-1", "--data", json.dumps({"message": "in a box"}), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"][0]["data"] == {"message": "in a box"}

    assert d.cli("mgmt", "echo-1", "scale", "--data", '{"instances": 2}').returncode == 0
    wait_sync(lambda: sum(i["state"] == "healthy" for i in d.json("ps")["instances"]) == 2, timeout_s=120)
    assert len(containers("echo-1")) == 2

    r = d.cli("delete", "block", "echo-1", timeout_s=120)
    assert r.returncode == 0, r.stderr
    wait_sync(lambda: containers("echo-1") == [], timeout_s=60)
    assert d.json("ps")["instances"] == [] and d.json("get", "blocks")["items"] == []


def test_missing_image_is_built_by_the_apply_task(daemons: list[Daemon], tmp_path: Path) -> None:
    base = cli("image", "build-base", "--data-dir", str(tmp_path / "img"), "--json", timeout_s=900)
    if base.returncode != 0:
        pytest.skip(f"the base image cannot be built here: {base.stderr.strip()[-300:]}")
    subprocess.run(["podman", "rmi", "-f", "localhost/aiosd-text-stats:latest"], capture_output=True, check=False,
                   timeout=60)
    d = Daemon(tmp_path, "p2", extra=["--driver", "podman"]).start(timeout_s=60)
    daemons.append(d)
    r = d.cli("apply", "-f", str(ROOT / "examples" / "text-stats"), timeout_s=600)
    assert r.returncode == 0, r.stderr + d.logs()[-3000:]
    assert "building image localhost/aiosd-text-stats:latest from" in r.stdout
    r = d.cli("infer", "text-stats-1", "--data", json.dumps({"text": "a b b."}), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["outputs"][0]["top_words"][0] == ["b", 2]
    assert d.cli("delete", "block", "text-stats-1", timeout_s=120).returncode == 0
    wait_sync(lambda: containers("text-stats-1") == [], timeout_s=60)


def test_an_image_published_to_the_network_is_fetched_by_the_apply_task(daemons: list[Daemon], tmp_path: Path) -> None:
    """`aiosd image push` makes an image an asset; a node that lacks it gets it from the asset's
    holders (here: its own blob store) and `podman load`s it instead of building it."""
    base = cli("image", "build-base", "--data-dir", str(tmp_path / "img"), "--json", timeout_s=900)
    if base.returncode != 0:
        pytest.skip(f"the base image cannot be built here: {base.stderr.strip()[-300:]}")
    name = "localhost/aiosd-text-stats:latest"
    d = Daemon(tmp_path, "p3", extra=["--driver", "podman"]).start(timeout_s=60)
    daemons.append(d)
    built = d.cli("image", "build", str(ROOT / "examples" / "text-stats"), "-t", name, timeout_s=600)
    assert built.returncode == 0, built.stderr
    pushed = d.cli("image", "push", name, "--json", timeout_s=300)
    assert pushed.returncode == 0, pushed.stderr
    assert subprocess.run(["podman", "rmi", "-f", name], capture_output=True, check=False, timeout=60).returncode == 0
    r = d.cli("apply", "-f", str(ROOT / "examples" / "text-stats"), timeout_s=600)
    assert r.returncode == 0, r.stderr + d.logs()[-3000:]
    assert f"fetching image {name} from peers" in r.stdout and "building image" not in r.stdout, r.stdout
    r = d.cli("infer", "text-stats-1", "--data", json.dumps({"text": "a b b."}), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["outputs"][0]["top_words"][0] == ["b", 2]
    assert d.cli("delete", "block", "text-stats-1", timeout_s=120).returncode == 0
    wait_sync(lambda: containers("text-stats-1") == [], timeout_s=60)
