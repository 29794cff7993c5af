"""A chaos test network: N real `aiosd run` daemons, each in its own network namespace.

Topology (nothing here touches the host namespace's interfaces or routes):

    hub namespace: bridge br0 ── v1 ── eth0 (198.18.0.1/24, namespace n1)
                              ├─ v2 ── eth0 (198.18.0.2/24, namespace n2) ...

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range) and are only ever used by
processes inside those namespaces; the harness talks to each daemon over its unix socket, which
lives on the shared filesystem. Each data dir is a small tmpfs (so a "full disk" is cheap and
real). Every node namespace holds an nft table `aiosd_chaos` the fault injector writes to
(faults.py). `ChaosNet` is a context manager: on exit, even after a failure, it stops every
daemon, kills the block instances they started, unmounts the tmpfs mounts and deletes every
namespace (which also deletes the veths and nft tables). Stale namespaces of a killed earlier
run (their creator pid is gone) are deleted on the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.daemons import AIOSD, Daemon
from tests.instances import kill_process_instances

PREFIX = "aiosd-chaos-"
SUBNET = "198.18.0"
P2P_PORT = 7701
DATA_TMPFS = "160m"
# Replication anti-entropy every 1 s (test profile); membership and Raft keep their lan timers,
# which the recovery targets (failover ≤ 2 s, reassignment ≤ 15 s) were measured with.
BASE_ENV = {"AIOSD_RUNTIME_DRIVER": "process", "AIOSD_REPLICATION_PROFILE": "test"}
NFT_BASE = """
table inet aiosd_chaos {
    set blocked { type ipv4_addr; }
    chain input { type filter hook input priority 0; policy accept; ip saddr @blocked drop; jump loss; }
    chain output { type filter hook output priority 0; policy accept; ip daddr @blocked drop; }
    chain loss { }
}
"""


def why_not() -> str | None:
    """Why a chaos network cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "nft", "mount"):
        if shutil.which(tool) is None:
            return f"the `{tool}` tool is not installed (iproute2 / nftables / util-linux)"
    return None


def sh(*argv: str, check: bool = True, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def delete_stale() -> int:
    """Delete chaos namespaces whose creating process is gone; return how many."""
    gone = 0
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        parts = ns[len(PREFIX):].split("-")
        if ns.startswith(PREFIX) and parts and parts[0].isdigit() and not Path(f"/proc/{parts[0]}").exists():
            sh("ip", "netns", "del", ns, check=False)
            gone += 1
    return gone


@dataclass
class Node:
    """One daemon and the namespace it runs in."""

    index: int
    ns: str
    addr: str
    daemon: Daemon
    node_id: str = ""
    killed: bool = False          # by a fault, not yet restarted
    frozen: bool = False          # SIGSTOPped
    base_env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.daemon.name

    @property
    def data_dir(self) -> Path:
        return self.daemon.data_dir

    def nft(self, script: str) -> None:
        r = subprocess.run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=script, capture_output=True,
                           text=True, timeout=10, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"nft in {self.ns} failed: {r.stderr.strip()}")

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self.daemon.env = {**self.base_env, **(extra_env or {})}
        self.daemon.start(timeout_s=40)
        self.killed = False


class ChaosNet:
    """N namespaced daemons joined by token (context manager; see the module docstring)."""

    def __init__(self, n: int = 5, env: dict[str, str] | None = None,
                 per_node_env: dict[int, dict[str, str]] | None = None,
                 code: dict[int, Path] | None = None) -> None:
        """`code`: node index -> a source tree (e.g. an older commit) that node's daemon and its
        `aiosd join` run from (cwd and PYTHONPATH), for version-skew runs."""
        if not 1 <= n <= 20:
            raise ValueError(f"n: must be in 1..20, got {n}")
        self.n = n
        self.env = {**BASE_ENV, **(env or {})}
        self.per_node_env = per_node_env or {}
        self.code = code or {}
        self.tag = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.hub = f"{self.tag}-hub"
        self.root = Path(tempfile.mkdtemp(prefix="aiosd-chaos-", dir="/tmp"))
        self.nodes: list[Node] = []
        self._namespaces: list[str] = []
        self._mounts: list[Path] = []
        self.ready_s = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            t0 = time.monotonic()
            delete_stale()
            self._build_topology()
            self._start_daemons()
            self.ready_s = time.monotonic() - t0
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything this network started; safe to call twice."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.daemon.signal(signal.SIGCONT)  # a frozen daemon cannot stop
                node.daemon.stop()
        with contextlib.suppress(Exception):
            kill_process_instances(self.root)
        for m in reversed(self._mounts):
            sh("umount", "-l", str(m), check=False)
        self._mounts.clear()
        for ns in reversed(self._namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()
        for node in self.nodes:
            shutil.rmtree(node.daemon.socket.parent, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _add_ns(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _build_topology(self) -> None:
        self._add_ns(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            ns = f"{self.tag}-n{i}"
            self._add_ns(ns)
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}", "netns", self.hub)
            sh("ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
            addr = f"{SUBNET}.{i}"
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            data = self.root / f"n{i}"
            data.mkdir()
            sh("mount", "-t", "tmpfs", "-o", f"size={DATA_TMPFS},mode=0700", "tmpfs", str(data))
            self._mounts.append(data)
            env = {**self.env, **self.per_node_env.get(i, {})}
            prefix = ["ip", "netns", "exec", ns]
            if i in self.code:  # `python -m` puts the cwd first on sys.path, so the tree is the cwd too
                env["PYTHONPATH"] = str(self.code[i])
                prefix += ["env", "-C", str(self.code[i])]
            d = Daemon(self.root, f"n{i}", p2p_host=addr, extra=["--p2p-port", str(P2P_PORT)], env=env,
                       prefix=prefix)
            node = Node(i, ns, addr, d, base_env=env)
            node.nft(NFT_BASE)
            self.nodes.append(node)

    def _join(self, node: Node, token: str) -> None:
        r = subprocess.run([*node.daemon.prefix, *AIOSD, "join", token, "--data-dir", str(node.data_dir), "--json"],
                           capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **node.base_env})
        if r.returncode != 0:
            raise RuntimeError(f"join of {node.name} failed: {r.stderr.strip()}")

    def _start_daemons(self) -> None:
        first = self.nodes[0]
        first.start()
        r = first.daemon.cli("token", "create", "--json", "--uses", str(self.n), "--ttl", "10m")
        if r.returncode != 0:
            raise RuntimeError(f"token create failed: {r.stderr}")
        token = json.loads(r.stdout)["token"]
        for node in self.nodes[1:]:
            self._join(node, token)
            node.start()
        for node in self.nodes:
            node.node_id = str(node.daemon.json("status")["node_id"])
        self.wait_all_alive(timeout_s=60)

    # -- views ---------------------------------------------------------------------------------

    def by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def up(self) -> list[Node]:
        """Nodes whose daemon process is running and not frozen."""
        return [n for n in self.nodes if not n.killed and not n.frozen]

    def wait_all_alive(self, timeout_s: float) -> None:
        ids = {n.node_id for n in self.nodes}
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            while True:
                r = node.daemon.cli("nodes", "--json", timeout_s=10)
                seen = {x["node_id"] for x in json.loads(r.stdout)["nodes"] if x["state"] == "alive"} \
                    if r.returncode == 0 else set()
                if seen == ids:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node.name} sees {len(seen)} of {len(ids)} nodes alive after {timeout_s}s")
                time.sleep(0.3)


if __name__ == "__main__":  # smoke: python -m tests.chaos.net [N]
    with ChaosNet(int(sys.argv[1]) if len(sys.argv) > 1 else 3) as net:
        print(f"{net.n} daemons ready in {net.ready_s:.1f}s:", [(n.name, n.addr, n.node_id[:8]) for n in net.nodes])
