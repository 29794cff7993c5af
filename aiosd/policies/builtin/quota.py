"""Quota checker `policy.quota.per-session:v1`: at most `max_requests` tasks per session.

Input `{session_id, quota?}` -> `{allowed}`. When the caller counts (AIOS passes `quota` =
current + 1) the policy only compares; otherwise it counts itself in a bounded LRU table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

from aiosd.policies.contract import AIOSv1PolicyRule
from aiosd.policies.errors import PolicyInputError

QUOTA_URI = "policy.quota.per-session:v1"
# Why 100,000: one small counter per live session; an attacker choosing session ids evicts only
# the oldest (LRU), which resets their quota, never grows memory.
MAX_SESSIONS = 100_000


class PerSessionQuota(AIOSv1PolicyRule):
    description: ClassVar[str] = "at most max_requests tasks per session"
    parameters_protocol: ClassVar[Mapping[str, Any]] = {"max_requests": {"type": "integer", "min": 0}}
    settings_protocol: ClassVar[Mapping[str, Any]] = {"max_sessions": {"type": "integer", "min": 1}}

    def __init__(self, rule_id: str, settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        super().__init__(rule_id, settings, parameters)
        cap = settings.get("max_sessions", MAX_SESSIONS)
        self.capacity = (
            cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else MAX_SESSIONS
        )
        self.counts: OrderedDict[str, int] = OrderedDict()

    def eval(
        self, parameters: Mapping[str, Any], input_data: Mapping[str, Any], context: Any
    ) -> dict[str, Any]:
        sid = input_data.get("session_id")
        if not isinstance(sid, str) or not sid:
            raise PolicyInputError("input_data.session_id", "must be a non-empty string")
        limit = parameters.get("max_requests", 1000)
        if not isinstance(limit, int) or isinstance(limit, bool):
            limit = 1000
        quota = input_data.get("quota")
        if quota is not None:
            if not isinstance(quota, int) or isinstance(quota, bool):
                raise PolicyInputError("input_data.quota", "must be an integer (the session's count + 1)")
            return {"allowed": quota <= limit, "used": quota, "limit": limit}
        used = self.counts.get(sid, 0) + 1
        if used > limit:
            return {"allowed": False, "used": used - 1, "limit": limit}
        self.counts[sid] = used
        self.counts.move_to_end(sid)
        while len(self.counts) > self.capacity:
            self.counts.popitem(last=False)
        return {"allowed": True, "used": used, "limit": limit}

    def management(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        sid = str(data.get("session_id", ""))
        if action == "get":
            return {"session_id": sid, "used": self.counts.get(sid, 0)}
        if action in ("reset", "remove"):
            self.counts.pop(sid, None)
            return {"ok": True}
        return super().management(action, data)


__all__ = ["MAX_SESSIONS", "QUOTA_URI", "PerSessionQuota"]
