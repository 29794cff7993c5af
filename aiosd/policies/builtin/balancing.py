"""Load balancers: round-robin, least-outstanding, session-sticky (AIOS `loadBalancer` slot).

Input `{mode: "load_balance", packet, instances}` -> `{"instance_id"}`. `instances` is a list of
ids, or of `{instance_id, outstanding}`; `input_data.outstanding` may map id -> in-flight count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

from aiosd.policies.contract import AIOSv1PolicyRule
from aiosd.policies.errors import PolicyInputError

ROUND_ROBIN_URI = "policy.loadBalancer.round-robin:v1"
LEAST_OUTSTANDING_URI = "policy.loadBalancer.least-outstanding:v1"
SESSION_STICKY_URI = "policy.loadBalancer.session-sticky:v1"
# Why 10,000: one entry per live session (~100 bytes); AIOS examples use 1,000-2,000.
DEFAULT_SESSION_CACHE = 10_000


def _instances(input_data: Mapping[str, Any]) -> tuple[list[str], dict[str, float]]:
    mode = input_data.get("mode", "load_balance")
    if mode != "load_balance":
        raise PolicyInputError("input_data.mode", f"must be load_balance, got {mode!r}"[:120])
    raw = input_data.get("instances")
    if not isinstance(raw, list) or not raw:
        raise PolicyInputError("input_data.instances", "must be a non-empty list of instance ids")
    ids: list[str] = []
    load: dict[str, float] = {}
    given = input_data.get("outstanding")
    if given is not None and not isinstance(given, Mapping):
        raise PolicyInputError("input_data.outstanding", "must be an object of instance id -> count")
    for i, item in enumerate(raw):
        if isinstance(item, str):
            iid = item
        elif isinstance(item, Mapping) and isinstance(item.get("instance_id"), str):
            iid = item["instance_id"]
            out = item.get("outstanding", 0)
            if isinstance(out, int | float) and not isinstance(out, bool):
                load[iid] = float(out)
        else:
            raise PolicyInputError(
                f"input_data.instances[{i}]", "must be an id or {instance_id, outstanding}"
            )
        ids.append(iid)
    for iid, n in (given or {}).items():
        if isinstance(n, int | float) and not isinstance(n, bool):
            load[str(iid)] = float(n)
    return ids, load


class RoundRobin(AIOSv1PolicyRule):
    description: ClassVar[str] = "each task to the next instance in turn"
    parameters_protocol: ClassVar[Mapping[str, Any]] = {"cache_sessions": {"type": "boolean"}}
    settings_protocol: ClassVar[Mapping[str, Any]] = {"session_cache_size": {"type": "integer", "min": 1}}

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        super().__init__(rule_id, settings, parameters)
        self.turn = 0

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        ids, _ = _instances(input_data)
        iid = ids[self.turn % len(ids)]
        self.turn += 1
        return {"instance_id": iid}


class LeastOutstanding(RoundRobin):
    description: ClassVar[str] = "the instance with the fewest tasks in flight (ties: in turn)"

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        ids, load = _instances(input_data)
        return {"instance_id": self.pick(ids, load)}

    def pick(self, ids: list[str], load: Mapping[str, float]) -> str:
        low = min(load.get(i, 0.0) for i in ids)
        ties = [i for i in ids if load.get(i, 0.0) == low]
        iid = ties[self.turn % len(ties)]
        self.turn += 1
        return iid


class SessionSticky(LeastOutstanding):
    """A session's tasks go to the same instance while it lives; new sessions to the least loaded."""

    description: ClassVar[str] = "same session -> same instance; new sessions least-outstanding"

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        super().__init__(rule_id, settings, parameters)
        size = settings.get("session_cache_size", DEFAULT_SESSION_CACHE)
        self.capacity = (
            size
            if isinstance(size, int) and not isinstance(size, bool) and size > 0
            else (DEFAULT_SESSION_CACHE)
        )
        self.sessions: OrderedDict[str, str] = OrderedDict()
        self.evicted = 0

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        ids, load = _instances(input_data)
        packet = input_data.get("packet")
        sid = packet.get("session_id") if isinstance(packet, Mapping) else None
        if not isinstance(sid, str) or not sid or parameters.get("cache_sessions") is False:
            return {"instance_id": self.pick(ids, load)}
        known = self.sessions.get(sid)
        if known is not None and known in ids:
            self.sessions.move_to_end(sid)
            return {"instance_id": known}
        iid = self.pick(ids, load)
        self.sessions[sid] = iid
        self.sessions.move_to_end(sid)
        while len(self.sessions) > self.capacity:  # LRU: the attacker may choose session ids
            self.sessions.popitem(last=False)
            self.evicted += 1
        return {"instance_id": iid}

    def management(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        if action == "get_current_mapping":
            return {"sessions": dict(self.sessions), "evicted": self.evicted}
        if action == "forget_instance":
            gone = data.get("instance_id")
            for sid in [s for s, i in self.sessions.items() if i == gone]:
                del self.sessions[sid]
            return {"ok": True}
        return super().management(action, data)


__all__ = [
    "LEAST_OUTSTANDING_URI",
    "ROUND_ROBIN_URI",
    "SESSION_STICKY_URI",
    "LeastOutstanding",
    "RoundRobin",
    "SessionSticky",
]
