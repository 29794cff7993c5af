"""Daemons with no seeds find each other through mDNS, inside a lo-only namespace the test creates.

Every daemon runs under `ip netns exec`, with zeroconf bound to 127.0.0.1 of that namespace, so
nothing multicasts on the host's interfaces. The namespace is always deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiosd.identity_files import NETWORK, NODE_CERT, NODE_KEY, identity_dir
from federation.certs import issue_cert
from federation.identity import CaKey, NodeKey
from tests.daemons import Daemon, cli
from tests.waiting import wait_sync

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` tool (iproute2) is not installed")
    name = f"aiosd-test-mdns-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", name], check=False, capture_output=True, text=True, timeout=10)
    if made.returncode != 0:
        pytest.skip(f"ip netns add failed: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)


def _member_of(first: Path, data_dir: Path) -> str:
    """An identity in `first`'s network with no seeds (as if it had joined and forgotten its seeds)."""
    ca = CaKey.load(identity_dir(first) / "ca.key")
    key = NodeKey.generate()
    cert = issue_cert(ca, key.public_bytes, network_id=ca.network_id, cluster="default", roles=("member",),
                      ttl_s=30 * 86400, now=time.time())
    d = identity_dir(data_dir)
    d.mkdir(parents=True, mode=0o700)
    key.save(d / NODE_KEY)
    (d / NODE_CERT).write_bytes(cert.to_bytes())
    shutil.copy(identity_dir(first) / NETWORK, d / NETWORK)
    return str(key.node_id)


def test_daemons_without_seeds_find_each_other_by_mdns(tmp_path: Path, netns: str, daemons: list[Daemon]) -> None:
    assert cli("init", "--data-dir", str(tmp_path / "n1")).returncode == 0
    ids = {_member_of(tmp_path / "n1", tmp_path / f"n{i}") for i in (2, 3)}
    env = {"AIOSD_DISCOVERY_MDNS_INTERFACES": "127.0.0.1"}
    started = [Daemon(tmp_path, f"n{i}", extra=["--mdns"], env=env, prefix=["ip", "netns", "exec", netns]).start()
               for i in (1, 2, 3)]
    daemons.extend(started)
    ids.add(started[0].json("status")["node_id"])
    def sees_all(d: Daemon) -> bool:
        return {n["node_id"] for n in d.json("nodes")["nodes"] if n["state"] == "alive"} == ids

    for d in started:
        wait_sync(lambda: sees_all(d), timeout_s=20, interval_s=0.3)  # noqa: B023  # called at once
    assert "mdns discovery started" in started[0].logs()
    assert "mdns candidate" in started[1].logs()
    doc = started[1].json("doctor")
    assert doc["mdns"]["enabled"] and doc["mdns"]["candidates_seen"] >= 2 and doc["seeds"] == []
