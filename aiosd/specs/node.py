"""The node spec (`addNode`, and each `nodes.nodeData[]` entry of a cluster): one machine's resources.

All sizes are MB, as in AIOS. Shape only; nothing here talks to the machine.
"""

from __future__ import annotations

from pydantic import Field

from aiosd.specs.base import AiosModel, JsonObject, Name
from aiosd.specs.errors import Problem, join_path


class GpuInfo(AiosModel):
    model_name: str = Field(default="", alias="modelName")
    memory: float = Field(default=0, ge=0)


class NodeGpus(AiosModel):
    count: int = Field(default=0, ge=0, le=1024)
    memory: float = Field(default=0, ge=0)
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=1024)
    model_names: list[str] = Field(default_factory=list, alias="modelNames")
    features: list[str] = Field(default_factory=list)


class VcpuInfo(AiosModel):
    count: float = Field(default=0, ge=0)


class StorageInfo(AiosModel):
    disks: int = Field(default=0, ge=0)
    size: float = Field(default=0, ge=0)


class NetworkInfo(AiosModel):
    interfaces: int = Field(default=0, ge=0)
    tx_bandwidth: float = Field(default=0, ge=0, alias="txBandwidth")
    rx_bandwidth: float = Field(default=0, ge=0, alias="rxBandwidth")


class NodeSpec(AiosModel):
    id: Name
    cluster_id: Name | None = Field(default=None, alias="clusterId")
    gpus: NodeGpus = Field(default_factory=NodeGpus)
    vcpus: VcpuInfo = Field(default_factory=VcpuInfo)
    memory: float = Field(default=0, ge=0)
    swap: float = Field(default=0, ge=0)
    storage: StorageInfo = Field(default_factory=StorageInfo)
    network: NetworkInfo = Field(default_factory=NetworkInfo)
    tags: list[str] = Field(default_factory=list)
    node_metadata: JsonObject = Field(default_factory=dict, alias="nodeMetadata")

    def problems(self, base: str) -> list[Problem]:
        out: list[Problem] = []
        if self.gpus.gpus and self.gpus.count != len(self.gpus.gpus):
            out.append(
                Problem(
                    join_path(join_path(base, "gpus"), "count"),
                    f"must equal the number of entries in gpus.gpus ({len(self.gpus.gpus)}),"
                    f" got {self.gpus.count}",
                )
            )
        return out


__all__ = ["GpuInfo", "NetworkInfo", "NodeGpus", "NodeSpec", "StorageInfo", "VcpuInfo"]
