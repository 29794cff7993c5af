"""The cluster spec (`createCluster`): a named group of nodes, its totals and its config.

Shape and cross-field checks only; `urlMap` is system-filled and kept as given.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiosd.specs.base import AiosModel, JsonObject, Name
from aiosd.specs.errors import Problem, join_path
from aiosd.specs.node import NetworkInfo, NodeSpec, StorageInfo, VcpuInfo

# Why 1,000: ARCHITECTURE §1 sizes a cluster at 1-100 nodes; 10x headroom, still bounded.
MAX_CLUSTER_NODES = 1000


class ClusterNodes(AiosModel):
    count: int = Field(default=0, ge=0, le=MAX_CLUSTER_NODES)
    node_data: list[NodeSpec] = Field(default_factory=list, alias="nodeData", max_length=MAX_CLUSTER_NODES)


class ClusterGpus(AiosModel):
    count: int = Field(default=0, ge=0)
    memory: float = Field(default=0, ge=0)


class CustomPolicySystem(AiosModel):
    name: str = ""
    version: str = ""


class ClusterConfig(AiosModel):
    allow_external_nodes: bool = Field(default=False, alias="allowExternalNodes")
    policy_executor_id: str = Field(default="", alias="policyExecutorId")
    policy_execution_mode: Literal["local", "remote", "distributed"] = Field(
        default="local", alias="policyExecutionMode"
    )
    custom_policy_system: CustomPolicySystem | None = Field(default=None, alias="customPolicySystem")
    public_hostname: str = Field(default="", alias="publicHostname")
    use_gateway: bool = Field(default=False, alias="useGateway")
    actions_policy_map: dict[str, str] = Field(default_factory=dict, alias="actionsPolicyMap")
    url_map: JsonObject = Field(default_factory=dict, alias="urlMap")


class ClusterSpec(AiosModel):
    id: Name
    region_id: str = Field(default="", alias="regionId")
    status: str = ""
    nodes: ClusterNodes = Field(default_factory=ClusterNodes)
    gpus: ClusterGpus = Field(default_factory=ClusterGpus)
    vcpus: VcpuInfo = Field(default_factory=VcpuInfo)
    memory: float = Field(default=0, ge=0)
    swap: float = Field(default=0, ge=0)
    storage: StorageInfo = Field(default_factory=StorageInfo)
    network: NetworkInfo = Field(default_factory=NetworkInfo)
    config: ClusterConfig = Field(default_factory=ClusterConfig)
    tags: list[str] = Field(default_factory=list)
    cluster_metadata: JsonObject = Field(default_factory=dict, alias="clusterMetadata")
    reputation: float = 0

    def problems(self, base: str) -> list[Problem]:
        out: list[Problem] = []
        nodes_path = join_path(join_path(base, "nodes"), "nodeData")
        seen: dict[str, int] = {}
        for i, node in enumerate(self.nodes.node_data):
            path = join_path(nodes_path, i)
            out.extend(node.problems(path))
            if node.id in seen:
                out.append(
                    Problem(
                        join_path(path, "id"), f"'{node.id}' is already used by nodeData[{seen[node.id]}]"
                    )
                )
            seen.setdefault(node.id, i)
            if node.cluster_id is not None and node.cluster_id != self.id:
                out.append(
                    Problem(
                        join_path(path, "clusterId"),
                        f"must be this cluster's id '{self.id}', got '{node.cluster_id}'",
                    )
                )
        return out


__all__ = [
    "MAX_CLUSTER_NODES",
    "ClusterConfig",
    "ClusterGpus",
    "ClusterNodes",
    "ClusterSpec",
    "CustomPolicySystem",
]
