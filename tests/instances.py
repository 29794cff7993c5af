"""Test cleanup for block instances: a stopped daemon leaves its instances running on purpose
(the next daemon adopts them), so tests that start blocks must remove what they leave behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from runtime.drivers.owner import ENV_DATA_DIR

ROOT = Path(__file__).resolve().parents[1]


def echo_block_docs(block_id: str, instances: int, allocator: dict[str, Any]) -> str:
    """examples/echo (component + block) as block `block_id` with `instances` instances placed by
    `allocator` ({uri, parameters, settings}); newline-separated JSON documents for `aiosd apply`."""
    comp = json.loads((ROOT / "examples/echo/component.json").read_text())
    block = json.loads((ROOT / "examples/echo/block.json").read_text())
    values = block["body"]["spec"]["values"]
    values.update(blockId=block_id, minInstances=instances, maxInstances=instances + 2)
    values["policyRulesSpec"] = [{"values": {"name": "resourceAllocator", "policyRuleURI": allocator["uri"],
                                             "parameters": allocator.get("parameters", {}),
                                             "settings": allocator.get("settings", {})}}]
    return json.dumps(comp) + "\n" + json.dumps(block)


def kill_process_instances(root: Path) -> int:
    """SIGKILL every process-driver instance whose socket, or whose owner's data dir (the owner
    marker; a long data dir puts the sockets beside the API socket instead), lies under `root`;
    return how many."""
    killed = 0
    prefixes = (f"AIOSD_INSTANCE_SOCKET={root}", f"{ENV_DATA_DIR}={root}")
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            env = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            if any(e.decode(errors="replace").startswith(prefixes) for e in env):
                proc.kill()
                killed += 1
    return killed


def remove_node_containers(node_id: str) -> None:
    """Remove every container the podman driver started for `node_id` (label aiosd.node)."""
    ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=aiosd.node={node_id}"], capture_output=True,
                         text=True, timeout=60, check=False).stdout.split()
    if ids:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True, timeout=120, check=False)
