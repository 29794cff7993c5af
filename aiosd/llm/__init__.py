"""LLM planning for the daemon: pure functions that propose how to split a model across nodes."""

from aiosd.llm.plan import (
    ModelProfile,
    NodeCapacity,
    PlanError,
    SplitPlan,
    StagePlan,
    format_plans,
    profile_from_config,
    propose_plans,
)

__all__ = [
    "ModelProfile",
    "NodeCapacity",
    "PlanError",
    "SplitPlan",
    "StagePlan",
    "format_plans",
    "profile_from_config",
    "propose_plans",
]
