"""The built-in policies, by URI."""

from aiosd.policies.builtin.allocation import BEST_FIT_URI, CPU_URI, BestFitAllocator, CpuAllocator
from aiosd.policies.builtin.autoscaling import (
    QUEUE_URI,
    UTILIZATION_URI,
    QueueAutoscaler,
    UtilizationAutoscaler,
)
from aiosd.policies.builtin.balancing import (
    LEAST_OUTSTANDING_URI,
    ROUND_ROBIN_URI,
    SESSION_STICKY_URI,
    LeastOutstanding,
    RoundRobin,
    SessionSticky,
)
from aiosd.policies.builtin.cluster_allocation import CLUSTER_FILTER_URI, ClusterFilter
from aiosd.policies.builtin.health import HEALTH_RETRY_URI, HealthRetry
from aiosd.policies.builtin.quota import QUOTA_URI, PerSessionQuota
from aiosd.policies.contract import AIOSv1PolicyRule

BUILTINS: dict[str, type[AIOSv1PolicyRule]] = {
    BEST_FIT_URI: BestFitAllocator,
    CPU_URI: CpuAllocator,
    ROUND_ROBIN_URI: RoundRobin,
    LEAST_OUTSTANDING_URI: LeastOutstanding,
    SESSION_STICKY_URI: SessionSticky,
    QUEUE_URI: QueueAutoscaler,
    UTILIZATION_URI: UtilizationAutoscaler,
    HEALTH_RETRY_URI: HealthRetry,
    QUOTA_URI: PerSessionQuota,
    CLUSTER_FILTER_URI: ClusterFilter,
}

__all__ = ["BUILTINS"]
