"""Autoscalers: queue length and utilization, with cooldowns, always within min..max instances.

Input `{block_data: {minInstances, maxInstances, instances: [{instance_id, queue_length,
utilization}]}, now}` (`now`: monotonic seconds, given by the caller: policies never read the
clock) -> `{skip: true, reason}` | `{skip: false, operation: "upscale", instances_count}` |
`{skip: false, operation: "downscale", instances_list}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiosd.policies.contract import AIOSv1PolicyRule
from aiosd.policies.errors import PolicyInputError

QUEUE_URI = "policy.autoscaler.queue:v1"
UTILIZATION_URI = "policy.autoscaler.utilization:v1"

_COOLDOWN_PROTOCOL: Mapping[str, Any] = {
    "scale_up_cooldown": {"type": "number", "min": 0, "description": "seconds between upscales"},
    "scale_down_cooldown": {"type": "number", "min": 0, "description": "seconds between downscales"},
    "intervalSeconds": {"type": "number", "min": 0},
}


@dataclass(frozen=True, slots=True)
class InstanceLoad:
    instance_id: str
    queue_length: float
    utilization: float  # 0..1


@dataclass(frozen=True, slots=True)
class BlockLoad:
    min_instances: int
    max_instances: int
    instances: tuple[InstanceLoad, ...]
    now: float


def read_block_load(input_data: Mapping[str, Any]) -> BlockLoad:
    """Decode the autoscaler input.

    Raises:
        PolicyInputError: naming the path of a missing or wrong value.
    """
    bd = input_data.get("block_data")
    if not isinstance(bd, Mapping):
        raise PolicyInputError("input_data.block_data", "must be an object")
    lo, hi = bd.get("minInstances", 0), bd.get("maxInstances")
    if not isinstance(lo, int) or isinstance(lo, bool) or lo < 0:
        raise PolicyInputError("input_data.block_data.minInstances", "must be an integer >= 0")
    if not isinstance(hi, int) or isinstance(hi, bool) or hi < max(lo, 1):
        raise PolicyInputError(
            "input_data.block_data.maxInstances", "must be an integer >= minInstances and >= 1"
        )
    raw = bd.get("instances", [])
    if not isinstance(raw, list):
        raise PolicyInputError("input_data.block_data.instances", "must be a list")
    out: list[InstanceLoad] = []
    for i, item in enumerate(raw):
        path = f"input_data.block_data.instances[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("instance_id"), str):
            raise PolicyInputError(path, "must be an object with instance_id")
        q, u = item.get("queue_length", 0), item.get("utilization", 0)
        for key, v in (("queue_length", q), ("utilization", u)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or math.isnan(v):
                raise PolicyInputError(f"{path}.{key}", "must be a number >= 0")
        out.append(InstanceLoad(item["instance_id"], float(q), float(u) / 100 if u > 1 else float(u)))
    now = input_data.get("now")
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise PolicyInputError("input_data.now", "must be the caller's monotonic time in seconds")
    return BlockLoad(lo, hi, tuple(out), float(now))


class _Autoscaler(AIOSv1PolicyRule):
    settings_protocol: ClassVar[Mapping[str, Any]] = _COOLDOWN_PROTOCOL

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        super().__init__(rule_id, settings, parameters)
        self.last_up: float | None = None
        self.last_down: float | None = None

    def _cooldown(self, key: str, parameters: Mapping[str, Any], default: float) -> float:
        v = parameters.get(key, self.settings.get(key, default))
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else default

    def desired(self, load: BlockLoad, parameters: Mapping[str, Any]) -> tuple[int, str]:
        raise NotImplementedError

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        load = read_block_load(input_data)
        current = len(load.instances)
        if current < load.min_instances:  # below the floor: no cooldown applies
            self.last_up = load.now
            return {
                "skip": False,
                "operation": "upscale",
                "instances_count": load.min_instances - current,
                "reason": f"{current} instances < minInstances {load.min_instances}",
            }
        if current > load.max_instances:
            self.last_down = load.now
            return {
                "skip": False,
                "operation": "downscale",
                "instances_list": self.victims(load, current - load.max_instances),
                "reason": f"{current} instances > maxInstances {load.max_instances}",
            }
        want, why = self.desired(load, parameters)
        want = max(load.min_instances, min(load.max_instances, want))
        if want > current:
            cd = self._cooldown("scale_up_cooldown", parameters, 30.0)
            if self.last_up is not None and load.now - self.last_up < cd:
                return {"skip": True, "reason": f"upscale cooling down ({cd:g} s)"}
            self.last_up = load.now
            return {"skip": False, "operation": "upscale", "instances_count": want - current, "reason": why}
        if want < current:
            cd = self._cooldown("scale_down_cooldown", parameters, 60.0)
            last = self.last_down if self.last_down is not None else self.last_up
            if last is not None and load.now - last < cd:
                return {"skip": True, "reason": f"downscale cooling down ({cd:g} s)"}
            self.last_down = load.now
            return {
                "skip": False,
                "operation": "downscale",
                "instances_list": self.victims(load, current - want),
                "reason": why,
            }
        return {"skip": True, "reason": why}

    @staticmethod
    def victims(load: BlockLoad, n: int) -> list[str]:
        # The least busy go first; among equals the newest (listed last) go first.
        order = sorted(
            range(len(load.instances)),
            key=lambda i: (load.instances[i].queue_length, load.instances[i].utilization, -i),
        )
        return [load.instances[i].instance_id for i in order[:n]]


class QueueAutoscaler(_Autoscaler):
    description: ClassVar[str] = "instances = ceil(total queued / max_queue), within min..max"
    parameters_protocol: ClassVar[Mapping[str, Any]] = {
        "max_queue": {"type": "number", "min": 1, "description": "queued tasks one instance should hold"},
        **_COOLDOWN_PROTOCOL,
    }

    def desired(self, load: BlockLoad, parameters: Mapping[str, Any]) -> tuple[int, str]:
        per = parameters.get("max_queue", 10)
        per = float(per) if isinstance(per, int | float) and not isinstance(per, bool) and per >= 1 else 10.0
        total = sum(i.queue_length for i in load.instances)
        want = math.ceil(total / per)
        return want, f"{total:g} queued at {per:g} per instance -> {want}"


class UtilizationAutoscaler(_Autoscaler):
    description: ClassVar[str] = "instances = ceil(current * avg utilization / target) (HPA rule)"
    parameters_protocol: ClassVar[Mapping[str, Any]] = {
        "target_utilization": {"type": "number", "min": 0, "max": 100},
        "target_cpu_utilization": {"type": "number", "min": 0, "max": 100},
        "target_gpu_utilization": {"type": "number", "min": 0, "max": 100},
        "tolerance": {"type": "number", "min": 0, "max": 1},
        **_COOLDOWN_PROTOCOL,
    }

    def desired(self, load: BlockLoad, parameters: Mapping[str, Any]) -> tuple[int, str]:
        target = 0.7
        for key in ("target_utilization", "target_gpu_utilization", "target_cpu_utilization"):
            v = parameters.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                target = v / 100 if v > 1 else float(v)
                break
        tol = parameters.get("tolerance", 0.1)
        tol = float(tol) if isinstance(tol, int | float) and not isinstance(tol, bool) else 0.1
        current = len(load.instances)
        if current == 0:
            return 0, "no instances"
        avg = sum(i.utilization for i in load.instances) / current
        ratio = avg / target
        if abs(ratio - 1.0) <= tol:  # Kubernetes HPA tolerance: no flapping around the target
            return current, f"utilization {avg:.2f} within {tol:g} of target {target:.2f}"
        want = math.ceil(current * ratio - 1e-9)
        return want, f"utilization {avg:.2f} vs target {target:.2f} -> {want}"


__all__ = [
    "QUEUE_URI",
    "UTILIZATION_URI",
    "BlockLoad",
    "InstanceLoad",
    "QueueAutoscaler",
    "UtilizationAutoscaler",
    "read_block_load",
]
