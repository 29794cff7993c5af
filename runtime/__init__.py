"""aiosd runtime: block instances as Podman containers or child processes, GPUs, supervision, local balancing.

Imports only `storage` and `sdk` of ours (ARCHITECTURE §2); the daemon wires these services together.
"""

from runtime.balancer import Balancer, InstanceSource, TaskReply
from runtime.client import InstanceClient
from runtime.desired import specs_from_request
from runtime.drivers.base import Driver, Observed
from runtime.drivers.podman import PodmanDriver
from runtime.drivers.process import ProcessDriver
from runtime.errors import (
    AiosdRuntimeError,
    DriverError,
    DriverUnavailable,
    GpuError,
    GpuUnavailable,
    ImageBuildError,
    ImageNotFound,
    InstanceBusy,
    InstanceNotFound,
    InstanceStartError,
    NoGpuError,
    NoHealthyInstance,
    SpecError,
    TaskError,
    TaskFailed,
)
from runtime.gpus import GpuBook, GpuInfo, GpuInventory, GpuMetrics, default_nvml
from runtime.images import (
    BASE_LATEST,
    BaseRecipe,
    PodmanCli,
    build_base,
    build_block,
    debian_mirror,
    image_exists,
)
from runtime.metrics import NodeMetrics, acollect
from runtime.select import open_driver
from runtime.spec import (
    Endpoint,
    GpuDevice,
    GpuMode,
    GpuRequest,
    HealthSettings,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    Mount,
    Resources,
)
from runtime.supervisor import Supervisor, SupervisorConfig

__all__ = [
    "BASE_LATEST",
    "AiosdRuntimeError",
    "Balancer",
    "BaseRecipe",
    "Driver",
    "DriverError",
    "DriverUnavailable",
    "Endpoint",
    "GpuBook",
    "GpuDevice",
    "GpuError",
    "GpuInfo",
    "GpuInventory",
    "GpuMetrics",
    "GpuMode",
    "GpuRequest",
    "GpuUnavailable",
    "HealthSettings",
    "ImageBuildError",
    "ImageNotFound",
    "InstanceBusy",
    "InstanceClient",
    "InstanceNotFound",
    "InstanceSource",
    "InstanceSpec",
    "InstanceStartError",
    "InstanceState",
    "InstanceStatus",
    "Mount",
    "NoGpuError",
    "NoHealthyInstance",
    "NodeMetrics",
    "Observed",
    "PodmanCli",
    "PodmanDriver",
    "ProcessDriver",
    "Resources",
    "SpecError",
    "Supervisor",
    "SupervisorConfig",
    "TaskError",
    "TaskFailed",
    "TaskReply",
    "acollect",
    "build_base",
    "build_block",
    "debian_mirror",
    "default_nvml",
    "image_exists",
    "open_driver",
    "specs_from_request",
]
