"""Node and cluster records in the `nodes` and `clusters` registry tables (AIOS's node and cluster
registries), kept current by their owners.

- Every node writes `nodes/<its id>` (only it may: the table is self-keyed): address, cluster,
  roles, labels/tags/nodeMetadata (from an applied `addNode`), hardware (CPU model and count,
  memory, disks, GPUs with index/uuid/name/memory), software versions and status. It is rewritten
  when any of it changes (checked every PUBLISH_S; a GPU inventory change shows within one period).
- The cluster's leader writes `clusters/<cluster id>`: status, node ids, leader, term, each node's
  membership state (`nodeStatus`: a node SWIM declares dead or left is marked so there, since
  only the node itself may write its own record), metadata/tags/config from an applied
  `createCluster`, capacity aggregates, and `nodes.nodeData[]` in AIOS's node shape, so a
  `clusterQuery` reaches node GPU names (`nodes.nodeData.gpus.modelNames`).
- Applied documents live beside them: `clusters/spec:<cluster>` (createCluster) and
  `clusters/node:<node>` (addNode), so the owner folds them into its record.

`node_record`, `cluster_record` and `hardware` are plain functions; `NodeRecords` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiosd import __version__
from aiosd.controller.inventory import FAKE_GPUS_ENV, LocalInventory, load_fake_nvml
from aiosd.errors import AiosdError
from aiosd.membership.service import MembershipService
from aiosd.registry.service import RegistryService
from federation.errors import FederationError
from federation.membership import MemberState
from federation.replication import InvalidWrite, WriteRefused

log = logging.getLogger(__name__)

PUBLISH_S = 2.0
NODES, CLUSTERS = "nodes", "clusters"
SPEC_PREFIX, NODE_PREFIX = "spec:", "node:"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware(data_dir: Path, gpus: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """This machine: CPU, memory (MB), the data dir's disk (MB), GPUs (as given)."""
    disks = []
    with contextlib.suppress(OSError):
        du = shutil.disk_usage(data_dir)
        disks.append({"path": str(data_dir), "totalMb": du.total >> 20, "freeMb": du.free >> 20})
    return {"cpu": {"model": cpu_model(), "count": os.cpu_count() or 1},
            "memoryMb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20,
            "disks": disks, "gpus": [dict(g) for g in gpus]}


def node_record(node_id: str, *, address: str, cluster: str, roles: Sequence[str], hw: Mapping[str, Any],
                applied: Mapping[str, Any] | None = None, status: str = "alive") -> dict[str, Any]:
    """The node's registry record: aiosd's fields plus AIOS's node-spec keys (gpus, vcpus, memory)."""
    applied = applied or {}
    gpus = list(hw.get("gpus", []))
    meta = dict(applied.get("nodeMetadata", {}))
    return {
        "id": node_id, "address": address, "clusterId": cluster, "roles": sorted(roles), "status": status,
        "labels": dict(meta.get("labels", {})), "tags": list(applied.get("tags", [])), "nodeMetadata": meta,
        "hardware": dict(hw),
        "software": {"aiosd": __version__, "python": platform.python_version(), "os": platform.platform()},
        "gpus": {"count": len(gpus), "memory": sum(float(g.get("memoryMb", 0)) for g in gpus),
                 "modelNames": sorted({str(g.get("name", "")) for g in gpus}),
                 "gpus": [{"modelName": g.get("name", ""), "memory": g.get("memoryMb", 0)} for g in gpus]},
        "vcpus": {"count": hw.get("cpu", {}).get("count", 0)}, "memory": hw.get("memoryMb", 0),
    }


def cluster_record(cluster: str, *, leader: str, term: int, members: Mapping[str, str],
                   nodes: Mapping[str, Mapping[str, Any]], spec: Mapping[str, Any] | None = None,
                   aggregates: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The cluster's registry record, from its members' states (id -> alive/suspect/dead/left),
    their node records, the applied createCluster values and the metric aggregates."""
    spec = spec or {}
    ids = sorted(members)
    alive = [n for n in ids if members[n] == "alive"]
    data = [{"id": n, "clusterId": cluster, "status": members[n], **{k: nodes[n][k] for k in
            ("gpus", "vcpus", "memory", "tags", "nodeMetadata", "labels") if k in nodes.get(n, {})}} for n in ids]
    gpu_n = sum(int(nodes.get(n, {}).get("gpus", {}).get("count", 0)) for n in alive)
    gpu_mem = sum(float(nodes.get(n, {}).get("gpus", {}).get("memory", 0)) for n in alive)
    return {
        "id": cluster, "status": "live" if alive else "down", "leader": leader, "term": term,
        "nodeIds": ids, "nodeStatus": dict(sorted(members.items())),
        "nodes": {"count": len(ids), "alive": len(alive), "nodeData": data},
        "gpus": {"count": gpu_n, "memory": gpu_mem},
        "vcpus": {"count": sum(float(nodes.get(n, {}).get("vcpus", {}).get("count", 0)) for n in alive)},
        "memory": sum(float(nodes.get(n, {}).get("memory", 0)) for n in alive),
        "tags": list(spec.get("tags", [])), "clusterMetadata": {"name": cluster, **dict(spec.get("clusterMetadata", {}))},
        "config": dict(spec.get("config", {})), "regionId": spec.get("regionId", ""),
        "capacity": dict(aggregates or {}),
    }


def _state(s: MemberState) -> str:
    return str(getattr(s, "value", s)).lower()


class NodeRecords:
    """Publishes this node's record and, while it leads, its cluster's (see the module doc)."""

    def __init__(self, registry: RegistryService, membership: MembershipService | None, local: LocalInventory,
                 node_id: str, cluster: str, roles: Sequence[str], data_dir: Path, leading: Any) -> None:
        self._reg, self._members, self._local = registry, membership, local
        self.node_id, self.cluster, self.roles, self.data_dir = node_id, cluster, list(roles), data_dir
        self._leading = leading  # () -> (leader term) or None: whether this node leads now
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="node-records")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _gpus(self) -> list[dict[str, Any]]:
        """Blocking (NVML). The fake inventory file is re-read each time, so tests can change it."""
        fake = os.environ.get(FAKE_GPUS_ENV)
        inv = self._local
        if fake:
            inv = LocalInventory(load_fake_nvml(Path(fake)))
            inv.open()
        try:
            return [{"index": g.index, "uuid": g.uuid, "name": g.name, "memoryMb": g.memory_total_mb}
                    for g in inv.gpus()]
        finally:
            if fake:
                inv.close()

    async def _value(self, key: str) -> dict[str, Any] | None:
        e = await self._reg.get(CLUSTERS, key)
        return e.value if e is not None else None

    async def publish(self) -> None:
        """Write this node's record (and its cluster's, when leading) where it changed."""
        hw = hardware(self.data_dir, await asyncio.to_thread(self._gpus))
        addr = self._members.addr if self._members is not None else ""
        rec = node_record(self.node_id, address=addr, cluster=self.cluster, roles=self.roles, hw=hw,
                          applied=await self._value(NODE_PREFIX + self.node_id))
        await self._put_changed(NODES, self.node_id, rec)
        term = self._leading()
        if term is None:
            return
        members = {self.node_id: "alive"}
        if self._members is not None:
            members.update({m.node: _state(m.state) for m in self._members.swim.members()
                            if m.meta.get("cluster") == self.cluster and m.node != self.node_id})
        nodes = {e.key: e.value for e in await self._reg.scan(NODES) if e.key in members}
        crec = cluster_record(self.cluster, leader=self.node_id, term=int(term), members=members, nodes=nodes,
                              spec=await self._value(SPEC_PREFIX + self.cluster))
        await self._put_changed(CLUSTERS, self.cluster, crec)

    async def _put_changed(self, table: str, key: str, value: dict[str, Any]) -> None:
        old = await self._reg.get(table, key)
        if old is None or old.value != value:
            await self._reg.put(table, key, value)
            self.published += 1

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish()
            except (WriteRefused, InvalidWrite, FederationError, AiosdError, OSError, ValueError) as e:
                log.warning("node record not published", extra={"error": str(e)})
            await asyncio.sleep(PUBLISH_S)


__all__ = ["CLUSTERS", "NODES", "NODE_PREFIX", "SPEC_PREFIX", "NodeRecords", "cluster_record", "hardware",
           "node_record"]
