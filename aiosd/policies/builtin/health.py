"""Stability checker `policy.health.retry:v1`: unhealthy threshold -> restart -> give up and report.

Input `{health_check_data: {instance_id: bool}}` -> `{actions: [{instance_id, action: restart|
give_up, reason}], unhealthy: [ids]}`. State per instance: consecutive failures and restarts;
instances absent from the input are forgotten (the state stays bounded by the live instances).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiosd.policies.contract import AIOSv1PolicyRule
from aiosd.policies.errors import PolicyInputError

HEALTH_RETRY_URI = "policy.health.retry:v1"


@dataclass(slots=True)
class _Track:
    failures: int = 0
    successes: int = 0
    restarts: int = 0
    given_up: bool = False


class HealthRetry(AIOSv1PolicyRule):
    description: ClassVar[str] = "restart after unhealthy_threshold failed checks; give up after max_restarts"
    parameters_protocol: ClassVar[Mapping[str, Any]] = {
        "unhealthy_threshold": {"type": "integer", "min": 1, "description": "failed checks in a row"},
        "max_restarts": {"type": "integer", "min": 0, "description": "restarts before giving up"},
        "healthy_threshold": {"type": "integer", "min": 1, "description": "good checks that clear restarts"},
    }
    settings_protocol: ClassVar[Mapping[str, Any]] = {
        "health_check_interval": {"type": "number", "min": 0},
        "check_interval_sec": {"type": "number", "min": 0},
    }

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        super().__init__(rule_id, settings, parameters)
        self.tracks: dict[str, _Track] = {}

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        data = input_data.get("health_check_data")
        if not isinstance(data, Mapping):
            raise PolicyInputError("input_data.health_check_data", "must be an object of instance id -> bool")
        threshold = _int(parameters, "unhealthy_threshold", 3)
        max_restarts = _int(parameters, "max_restarts", 3)
        healthy_threshold = _int(parameters, "healthy_threshold", threshold)
        actions: list[dict[str, Any]] = []
        unhealthy: list[str] = []
        for iid, ok in data.items():
            if not isinstance(ok, bool):
                raise PolicyInputError(f"input_data.health_check_data.{iid}", "must be true or false")
        for gone in [i for i in self.tracks if i not in data]:
            del self.tracks[gone]
        for iid, ok in data.items():
            t = self.tracks.setdefault(str(iid), _Track())
            if ok:
                t.failures = 0
                t.successes += 1
                if t.successes >= healthy_threshold:
                    t.restarts = 0
                continue
            unhealthy.append(str(iid))
            t.successes = 0
            t.failures += 1
            if t.given_up or t.failures < threshold:
                continue
            if t.restarts < max_restarts:
                t.restarts += 1
                t.failures = 0
                actions.append(
                    {
                        "instance_id": str(iid),
                        "action": "restart",
                        "reason": f"{threshold} failed health checks in a row (restart {t.restarts}"
                        f" of {max_restarts})",
                    }
                )
            else:
                t.given_up = True
                actions.append(
                    {
                        "instance_id": str(iid),
                        "action": "give_up",
                        "reason": f"still unhealthy after {max_restarts} restarts",
                    }
                )
        return {"actions": actions, "unhealthy": unhealthy}

    def management(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        if action == "get_state":
            return {
                i: {"failures": t.failures, "restarts": t.restarts, "given_up": t.given_up}
                for i, t in self.tracks.items()
            }
        if action == "reset":
            self.tracks.pop(str(data.get("instance_id")), None)
            return {"ok": True}
        return super().management(action, data)


def _int(params: Mapping[str, Any], key: str, default: int) -> int:
    v = params.get(key, default)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else default


__all__ = ["HEALTH_RETRY_URI", "HealthRetry"]
