"""A stage's post-processing policy, run by the stage's node on the block's output before routing.

AIOS routes conditionally with a post-processing policy that rewrites `output_ptr`; here the policy
answers `{"packet": {..., "output_ptr": "{\\"next\\": [labels]}"}}` and routing.next_labels sends the
output only to those children. Built in: `policy.vdag.route-by-field:v1` (parameters: `field`, a
dot path into the output data; `routes`, value → nodeLabel; `default`, a nodeLabel or omitted =
answer the entry from this stage). Any other URI runs through the policies role (published policies).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiosd.policies.errors import PolicyError
from aiosd.vdag.compile import CompiledVdag, Stage
from aiosd.vdag.errors import VdagError

if TYPE_CHECKING:
    from aiosd.vdag.service import VdagService

ROUTE_BY_FIELD_URI = "policy.vdag.route-by-field:v1"


def route_by_field(parameters: Mapping[str, Any], data: Any) -> list[str]:
    """The nodeLabels a route-by-field policy sends `data` to (pure)."""
    cur: Any = data
    for seg in str(parameters.get("field", "")).split("."):
        cur = cur.get(seg) if isinstance(cur, dict) else None
    routes = parameters.get("routes") or {}
    label = routes.get(str(cur)) if isinstance(routes, dict) and cur is not None else None
    if label is None:
        label = parameters.get("default")
    return [str(label)] if label else []


async def run_postprocessing(svc: VdagService, c: CompiledVdag, stage: Stage, out: dict[str, Any]) -> dict[str, Any]:
    """`out` after the stage's post-processing policy (unchanged without one). Raises VdagError."""
    ref = stage.postprocessing
    if ref is None:
        return out
    raw = out.get("data", "")
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = raw
    if ref.uri == ROUTE_BY_FIELD_URI:
        return {**out, "output_ptr": json.dumps({"next": route_by_field(ref.parameters, data)})}
    pol = svc.blocks.policy_svc
    if pol is None:
        raise VdagError(502, "policy_failed", f"stage {stage.label!r}: no policy {ref.uri!r} on this node")
    try:
        h = await pol.runner.load(ref.uri, parameters=dict(ref.parameters), settings=dict(ref.settings),
                                  rule_id=f"{c.uri}/{stage.label}/post")
        ans = await h.eval({"packet": {k: out.get(k) for k in ("session_id", "seq_no", "data", "output_ptr")},
                            "vdag": c.uri, "node_label": stage.label, "block_id": stage.block_id,
                            "modelParameters": dict(stage.model_parameters)})
    except PolicyError as e:
        raise VdagError(502, "policy_failed", f"stage {stage.label!r}: post-processing policy failed: {e}") from None
    pkt = ans.get("packet")
    if not isinstance(pkt, dict):
        raise VdagError(502, "policy_failed", f"stage {stage.label!r}: post-processing policy answered no packet")
    new = dict(out)
    for k in ("data", "output_ptr"):
        if isinstance(pkt.get(k), str):
            new[k] = pkt[k]
    return new


__all__ = ["ROUTE_BY_FIELD_URI", "route_by_field", "run_postprocessing"]
