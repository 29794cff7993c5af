"""The network's component and block registries: this node's share of the `components` and
`blocks` registry tables, kept equal to what it owns.

- A component applied on an admin node is written to `components/<uri>` (the table is admin-only,
  signed and replicated like every record); deleting it there tombstones it on every node.
- Every block has one `blocks/<block id>` record, written by its owner: the node that applied it
  (a block of that node alone), or the leader of the cluster whose controller places it. The
  record says where the block runs (cluster, nodes, instances and their state) and its policies.
  A new leader takes over the records of its cluster's blocks; a block that is gone is deleted.

`block_record` and `diff` are pure; `NetworkRecords` runs them on a change (`poke`) and every
SYNC_S, so a record a peer's restart or an election left stale is corrected within one period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiosd.blocks.apply import CLUSTER
from aiosd.blocks.catalog import BlockCatalog, RecordKind
from aiosd.controller.service import ControllerService
from aiosd.registry.service import RegistryService
from federation.errors import FederationError
from federation.replication import InvalidWrite, WriteRefused

log = logging.getLogger(__name__)

SYNC_S = 2.0
BLOCKS_TABLE = "blocks"
COMPONENTS_TABLE = "components"
CLUSTERS_TABLE = "clusters"
LOCAL = "node"  # the record's "placement" for a block of one node
# Keys of a catalog block record copied into its network record as they are.
_COPIED = ("componentUri", "blockMetadata", "policies", "minInstances", "maxInstances", "tags")


@dataclass(frozen=True, slots=True)
class InstanceRow:
    instance_id: str
    node_id: str
    state: str


def block_record(rec: Mapping[str, Any], *, owner: str, cluster: str, placement: str,
                 instances: Iterable[InstanceRow], desired: int | None = None) -> dict[str, Any]:
    """The network record of one block (AIOS block-registry keys plus where it runs)."""
    rows = sorted(instances, key=lambda r: r.instance_id)
    out: dict[str, Any] = {"id": str(rec.get("id", "")), "owner": owner, "cluster": cluster,
                           "placement": placement}
    out.update({k: rec[k] for k in _COPIED if k in rec})
    out["desiredInstances"] = int(desired if desired is not None else rec.get("desiredInstances", len(rows)))
    out["nodes"] = sorted({r.node_id for r in rows})
    out["instances"] = [{"instance_id": r.instance_id, "node_id": r.node_id, "state": r.state} for r in rows]
    out["status"] = {"instances": len(rows), "healthy": sum(r.state == "healthy" for r in rows)}
    return out


def diff(want: Mapping[str, dict[str, Any]], have: Mapping[str, dict[str, Any]], owned: Callable[[dict[str, Any]], bool]
         ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(records to write, keys to delete): written when missing or different; deleted when a
    record this node owns (`owned`) is not wanted any more."""
    puts = {k: v for k, v in want.items() if have.get(k) != v}
    gone = sorted(k for k, v in have.items() if k not in want and owned(v))
    return puts, gone


class NetworkRecords:
    """Keeps this node's records in the `components` and `blocks` tables (see the module doc)."""

    def __init__(self, registry: RegistryService, catalog: BlockCatalog, node_id: str, cluster: str,
                 instance_states: Callable[[], list[Any]], controller: ControllerService | None = None) -> None:
        self._reg, self._catalog, self.node_id, self.cluster = registry, catalog, node_id, cluster
        self._states, self._controller = instance_states, controller
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0
        self.refused = 0  # component writes refused (this node is not an admin)
        catalog.subscribe(self._on_catalog)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="network-records")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        self._wake.set()

    # ----- what this node owns ----------------------------------------------------------
    def _leading(self) -> bool:
        return self._controller is not None and self._controller.role is not None

    def _owned(self, value: dict[str, Any]) -> bool:
        if value.get("placement") == CLUSTER:
            return self._leading() and value.get("cluster") == self.cluster
        return value.get("owner") == self.node_id

    async def wanted_blocks(self) -> dict[str, dict[str, Any]]:
        states = {s.instance_id: s for s in self._states()}

        def state(iid: str, node: str) -> str:
            s = states.get(iid) if node == self.node_id else None
            return s.state.value if s is not None else "placed"

        out: dict[str, dict[str, Any]] = {}
        for rec in await self._catalog.list(RecordKind.BLOCK):
            if rec.get("placement") == CLUSTER:
                continue  # its cluster's leader owns the record
            bid = str(rec["id"])
            rows = [InstanceRow(s.instance_id, self.node_id, s.state.value) for s in states.values()
                    if s.block_id == bid]
            out[bid] = block_record(rec, owner=self.node_id, cluster=self.cluster, placement=LOCAL, instances=rows)
        if self._leading() and self._controller is not None:
            view = self._controller.view()
            for bid, spec in view.specs.items():
                insts = view.blocks.get(bid, {})
                rows = [InstanceRow(i.instance_id, i.node_id, state(i.instance_id, i.node_id)) for i in insts.values()]
                out[bid] = block_record(spec.block, owner=self.node_id, cluster=self.cluster, placement=CLUSTER,
                                        instances=rows, desired=len(insts))
        return out

    # ----- sync -------------------------------------------------------------------------
    async def sync(self) -> None:
        """Write what changed, delete what this node owns and no longer has."""
        want = await self.wanted_blocks()
        have = {e.key: e.value for e in await self._reg.scan(BLOCKS_TABLE)}
        puts, gone = diff(want, have, self._owned)
        if puts:
            await self._reg.put_many(BLOCKS_TABLE, puts)
        for key in gone:
            await self._reg.delete(BLOCKS_TABLE, key)
        if self._reg.certs.is_admin(self._reg.node_id):
            comps = {str(c["uri"]): c for c in await self._catalog.list(RecordKind.COMPONENT)}
            have_c = {e.key: e.value for e in await self._reg.scan(COMPONENTS_TABLE)}
            cputs = {k: v for k, v in comps.items() if have_c.get(k) != v}
            if cputs:
                await self._reg.put_many(COMPONENTS_TABLE, cputs)
        self.syncs += 1

    async def put_infra(self, records: Mapping[str, dict[str, Any]]) -> None:
        """Applied createCluster/addNode values into the `clusters` table (their owners fold them in)."""
        await self._reg.put_many(CLUSTERS_TABLE, records)

    async def delete_component(self, uri: str) -> bool:
        """Remove a component from the network (an admin node's delete). Raises WriteRefused."""
        return await self._reg.delete(COMPONENTS_TABLE, uri)

    async def network_component(self, uri: str) -> dict[str, Any] | None:
        e = await self._reg.get(COMPONENTS_TABLE, uri)
        return e.value if e is not None else None

    def _on_catalog(self, kind: RecordKind, key: str, record: dict[str, Any] | None) -> None:
        if kind is RecordKind.COMPONENT and record is None:
            with contextlib.suppress(RuntimeError):  # no running loop: the next sync cannot see it either
                asyncio.get_running_loop().create_task(self._drop_component(key))
        self.poke()

    async def _drop_component(self, uri: str) -> None:
        try:
            await self.delete_component(uri)
        except WriteRefused:
            self.refused += 1

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except WriteRefused as e:
                self.refused += 1
                log.debug("network record refused", extra={"error": str(e)})
            except (InvalidWrite, FederationError, OSError, ValueError) as e:
                log.warning("network records not synced", extra={"error": str(e)})


__all__ = ["BLOCKS_TABLE", "COMPONENTS_TABLE", "LOCAL", "InstanceRow", "NetworkRecords", "block_record", "diff"]
