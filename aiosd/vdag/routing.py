"""Run-time routing decisions, sans-IO: which stages come next, which instance takes a packet.

- `next_labels`: a stage's children, unless its output packet's `output_ptr` (rewritten by a
  post-processing policy) names `{"next": [labels]}`: then only those children (conditional routing).
- `choose_target`: one (node, instance) of the next block. A fan-in stage (several parents) takes
  every branch of one (session_id, seq_no) on the same instance, so its Muxer joins them: the pick
  is a hash of the task over the sorted targets, the same at every sender. Otherwise this node's own
  instances first (no network hop), else a random node running it; with session affinity (the stage's
  `modelParameters.sessionAffinity`, e.g. a split LLM's stages holding a KV cache per session) a hash of
  the session over the sorted nodes, so every task of a session reaches the same node (and there the
  balancer keeps it on one instance: flow.py submits it sticky).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aiosd.vdag.compile import Stage


@dataclass(frozen=True, slots=True, order=True)
class Target:
    node: str
    instance: str  # "" when the node's own balancer picks
    addr: str = ""


def next_labels(stage: Stage, output_ptr: str) -> list[str]:
    """The children a stage's output goes to (all, or those `output_ptr.next` names)."""
    if output_ptr and output_ptr.lstrip().startswith("{"):
        try:
            ptr = json.loads(output_ptr)
        except ValueError:
            ptr = None
        nxt = ptr.get("next") if isinstance(ptr, dict) else None
        if isinstance(nxt, list):
            wanted = {str(x) for x in nxt}
            return [c for c in stage.children if c in wanted or c.split("/", 1)[0] in wanted]
    return list(stage.children)


def task_hash(session_id: str, seq_no: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{session_id}\x00{seq_no}".encode(), digest_size=8).digest(), "big")


def choose_target(targets: Sequence[Target], *, me: str, fan_in: bool, session_id: str, seq_no: int,
                  rng: random.Random, exclude: frozenset[str] = frozenset(), sticky: bool = False) -> Target | None:
    """One target for a packet, or None when none is left; `exclude`: nodes that failed it.
    Outside fan-in the instance is left to the receiving node's own load balancer ("")."""
    left = sorted(t for t in targets if t.node not in exclude)
    if not left:
        return None
    if fan_in:
        return left[task_hash(session_id, seq_no) % len(left)]
    local = [t for t in left if t.node == me]
    if local:
        pick = local[0]
    elif sticky:
        nodes = sorted({t.node: t for t in left}.values())
        pick = nodes[task_hash(session_id, 0) % len(nodes)]
    else:
        pick = rng.choice(left)
    return Target(pick.node, "", pick.addr)


__all__ = ["Target", "choose_target", "next_labels", "task_hash"]
