"""The management command spec (`executeMgmtCommand`): one command to a block's or a cluster's service.

Shape only; delivering the command is the control plane's job.
"""

from __future__ import annotations

from pydantic import Field

from aiosd.specs.base import AiosModel, JsonObject, Name
from aiosd.specs.errors import Problem, join_path

BLOCK_SERVICES = ("instances", "executor", "autoscaler", "health")
CLUSTER_SERVICES = ("stability_checker",)


class MgmtSpec(AiosModel):
    block_id: Name | None = Field(default=None, alias="blockId")
    cluster_id: Name | None = Field(default=None, alias="clusterId")
    service: str
    mgmt_command: str = Field(alias="mgmtCommand", min_length=1, max_length=256)
    mgmt_data: JsonObject = Field(default_factory=dict, alias="mgmtData")

    @property
    def target(self) -> tuple[str, str]:
        """("block", id) or ("cluster", id)."""
        if self.block_id is not None:
            return ("block", self.block_id)
        return ("cluster", self.cluster_id or "")

    def problems(self, base: str) -> list[Problem]:
        if (self.block_id is None) == (self.cluster_id is None):
            return [Problem(join_path(base, "blockId"), "exactly one of blockId or clusterId is required")]
        allowed = BLOCK_SERVICES if self.block_id is not None else CLUSTER_SERVICES
        if self.service not in allowed:
            kind = "block" if self.block_id is not None else "cluster"
            return [
                Problem(
                    join_path(base, "service"),
                    f"must be one of {', '.join(allowed)} for a {kind} command, got {self.service[:60]!r}",
                )
            ]
        return []


__all__ = ["BLOCK_SERVICES", "CLUSTER_SERVICES", "MgmtSpec"]
