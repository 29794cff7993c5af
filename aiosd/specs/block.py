"""The block spec (`createBlock`): a component instantiated with min..max instances and policies.

Checks the shape only; inheritance from the component is `resolve.py`'s job.
"""

from __future__ import annotations

from pydantic import Field

from aiosd.specs.base import AiosModel, ComponentUri, JsonObject, Name, PolicyUri
from aiosd.specs.errors import Problem, join_path

# Why 10,000: a block is one cluster's worth of instances (1..100 nodes, a few per GPU); a larger
# number is a typo that would make the scheduler and autoscaler plan absurd work.
MAX_INSTANCES = 10_000
# Why 64: AIOS reads 5..8 policy slots per block; 64 leaves room for custom ones.
MAX_POLICIES = 64
# The slots the system reads (AIOS §2.2 plus the block registry example's extras).
KNOWN_POLICY_SLOTS = frozenset(
    {
        "clusterAllocator",
        "resourceAllocator",
        "loadBalancer",
        "stabilityChecker",
        "autoscaler",
        "loadBalancerMapper",
        "assignment",
        "accessRulesPolicy",
        "quotaChecker",
        "preProcessing",
        "postProcessing",
    }
)


class BlockPolicyValues(AiosModel):
    name: Name
    policy_rule_uri: PolicyUri = Field(alias="policyRuleURI")
    parameters: JsonObject = Field(default_factory=dict)
    settings: JsonObject = Field(default_factory=dict)


class BlockPolicyEntry(AiosModel):
    template_type: str = Field(default="", alias="@templateType")
    values: BlockPolicyValues


class BlockSpec(AiosModel):
    block_id: Name | None = Field(default=None, alias="blockId")
    block_component_uri: ComponentUri = Field(alias="blockComponentURI")
    min_instances: int = Field(alias="minInstances", ge=0, le=MAX_INSTANCES)
    max_instances: int = Field(alias="maxInstances", ge=1, le=MAX_INSTANCES)
    block_init_data: JsonObject | None = Field(default=None, alias="blockInitData")
    init_settings: JsonObject | None = Field(default=None, alias="initSettings")
    parameters: JsonObject | None = None
    policy_rules_spec: list[BlockPolicyEntry] = Field(
        default_factory=list, alias="policyRulesSpec", max_length=MAX_POLICIES
    )
    block_metadata: JsonObject | None = Field(default=None, alias="blockMetadata")
    tags: list[str] | None = None

    def problems(self, base: str) -> list[Problem]:
        """Cross-field rules pydantic cannot see field by field."""
        out: list[Problem] = []
        if self.min_instances > self.max_instances:
            out.append(
                Problem(
                    join_path(base, "maxInstances"),
                    f"must be >= minInstances ({self.min_instances}), got {self.max_instances}",
                )
            )
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.policy_rules_spec):
            name = entry.values.name
            if name in seen:
                path = f"{join_path(base, 'policyRulesSpec')}[{i}].values.name"
                out.append(Problem(path, f"'{name}' is already used by policyRulesSpec[{seen[name]}]"))
            else:
                seen[name] = i
        return out


__all__ = ["KNOWN_POLICY_SLOTS", "MAX_INSTANCES", "BlockPolicyEntry", "BlockPolicyValues", "BlockSpec"]
