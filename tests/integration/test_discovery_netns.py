"""mDNS discovery for real: zeroconf daemons inside a lo-only network namespace the test creates.

Never multicasts on the host's interfaces: every Discovery here runs inside the namespace via
`ip netns exec`, bound to 127.0.0.1. Also run as `python -m tests.integration.test_discovery_netns
child NODE NET PORT` (the child process: prints one JSON line per candidate, exits on stdin EOF).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from zeroconf.asyncio import AsyncServiceInfo

from federation.discovery import SERVICE_TYPE, Candidate, Discovery, candidate_from_info
from federation.sansio import NodeId
from tests.waiting import wait_sync

ROOT = Path(__file__).resolve().parents[2]


def _info(props: dict[str, str], addrs: list[str] | None = None, port: int = 7701) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"x.{SERVICE_TYPE}",
        port=port,
        properties=props,
        parsed_addresses=addrs or ["127.0.0.1"],
    )


def test_candidate_from_a_good_record() -> None:
    c = candidate_from_info(_info({"node_id": "abcdefgh23456789", "network_id": "net1"}))
    assert c == Candidate(addr="127.0.0.1", port=7701, node_id=NodeId("abcdefgh23456789"), network_id="net1")


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"node_id": "abc"},
        {"node_id": "BAD ID", "network_id": "n"},
        {"node_id": "a" * 100, "network_id": "n"},
    ],
)
def test_unusable_records_give_no_candidate(props: dict[str, str]) -> None:
    assert candidate_from_info(_info(props)) is None


async def test_disabled_discovery_starts_no_zeroconf() -> None:
    async with Discovery(NodeId("n1"), "net", 7701, [], False, lambda c: None) as d:
        assert d._azc is None


def test_enabled_discovery_needs_explicit_interfaces() -> None:
    with pytest.raises(ValueError, match="interfaces"):
        Discovery(NodeId("n1"), "net", 7701, [], True, lambda c: None)


# -- real zeroconf in a network namespace ------------------------------------------------------


def _netns_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    return None


def _delete_stale_namespaces() -> None:
    """Remove namespaces left by a killed earlier run (their creator's pid is gone)."""
    listed = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=10)
    for line in listed.stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        parts = ns.split("-")
        stale = ns.startswith("aiosd-test-disc-") and len(parts) == 5 and parts[3].isdigit()
        if stale and not Path(f"/proc/{parts[3]}").exists():
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[str]:
    why = _netns_available()
    if why:
        pytest.skip(why)
    _delete_stale_namespaces()
    name = f"aiosd-test-disc-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(
        ["ip", "netns", "add", name], check=False, capture_output=True, text=True, timeout=10
    )
    if made.returncode != 0:
        pytest.skip(f"ip netns add failed: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)


class Child:
    """One Discovery process in the namespace; its candidates arrive on a queue."""

    def __init__(self, ns: str, node_id: str, network_id: str, port: int) -> None:
        self.node_id = node_id
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.integration.test_discovery_netns", "child",
             node_id, network_id, str(port)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.seen: dict[str, dict[str, object]] = {}
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def poll(self) -> dict[str, dict[str, object]]:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.seen
            c = json.loads(line)
            self.seen[c["node_id"]] = c

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.mark.netns
def test_daemons_in_a_lo_only_namespace_find_each_other(netns: str) -> None:
    names = [f"node{i}aaaaaaaaaaaa" for i in range(3)]
    children = [Child(netns, n, "net1", 7701 + i) for i, n in enumerate(names)]
    children.append(Child(netns, "strangerbbbbbbbb", "net2", 7799))
    try:

        def all_found() -> bool:
            for c in children[:3]:
                seen = c.poll()
                if set(seen) != set(names) - {c.node_id}:
                    assert c.proc.poll() is None, c.proc.stderr.read() if c.proc.stderr else ""
                    return False
            return True

        wait_sync(all_found, timeout_s=20, interval_s=0.05)
        for c in children[:3]:
            for nid, cand in c.seen.items():
                assert cand["addr"] == "127.0.0.1" and cand["network_id"] == "net1"
                assert cand["port"] == 7701 + names.index(nid)
        # the other network's node is never delivered, and it sees none of net1
        assert all("strangerbbbbbbbb" not in c.poll() for c in children[:3])
        assert children[3].poll() == {}
    finally:
        for c in children:
            c.stop()
    assert all(c.proc.returncode == 0 for c in children), [
        c.proc.stderr.read() for c in children if c.proc.stderr
    ]


async def _child_main(node_id: str, network_id: str, port: int) -> None:
    def on_candidate(c: Candidate) -> None:
        print(json.dumps({"addr": c.addr, "port": c.port, "node_id": c.node_id, "network_id": c.network_id}),
              flush=True)  # fmt: skip

    async with Discovery(NodeId(node_id), network_id, port, ["127.0.0.1"], True, on_candidate):
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "child":
    asyncio.run(_child_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
