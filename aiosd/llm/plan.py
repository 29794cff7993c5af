"""Split planning: propose contiguous layer ranges per node and the decode speed each plan should reach.

Pure functions, no I/O (exo-style preview): the caller reads config.json and measures the nodes (free
memory, memory bandwidth, link latency); `propose_plans` returns plans best first. The model of one
decode step: every stage streams its weights once from memory (`bytes / bandwidth`, decode is memory
bound) and the activations cross each hop plus the sampled token's way back from the tail to the head
(`latency + bytes / link bandwidth`), so a split pays for its hops (exo: 40 -> 24 tok/s on two machines).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiosd.errors import UsageError

Strategy = Literal["memory", "fastest"]
# Brute-force the chain order up to this many stages (6! = 720 orders); beyond, nearest-neighbour order.
MAX_EXACT_ORDER = 6
# Default per-link bandwidth for activations when the caller has no measurement: 1 Gbit/s Ethernet.
DEFAULT_LINK_BYTES_S = 125e6


class PlanError(UsageError, ValueError):
    """The model does not fit the nodes, or an input is malformed (the message names it)."""


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What a split needs to know about a checkpoint, in bytes."""

    n_layers: int
    layer_bytes: int
    embed_bytes: int
    head_bytes: int
    kv_bytes_per_token_layer: int
    hidden_bytes_per_token: int


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """One candidate node: memory it can give the model and how fast that memory reads."""

    node_id: str
    free_bytes: int
    bandwidth_bytes_s: float
    device: Literal["gpu", "cpu"] = "cpu"


@dataclass(frozen=True, slots=True)
class StagePlan:
    """Layers [start, end) on one node; `step_s` = its share of one decode step."""

    node_id: str
    start: int
    end: int
    memory_bytes: int
    step_s: float


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """A chain of stages covering [0, n_layers) and its expected single-stream decode speed."""

    stages: tuple[StagePlan, ...]
    strategy: Strategy
    compute_s: float
    network_s: float

    @property
    def step_s(self) -> float:
        """Seconds per generated token (compute + network)."""
        return self.compute_s + self.network_s

    @property
    def tokens_per_s(self) -> float:
        """Expected decode tokens per second for one session."""
        return 1.0 / self.step_s if self.step_s > 0 else math.inf


def profile_from_config(config: Mapping[str, Any], dtype_bytes: int = 2) -> ModelProfile:
    """A Llama-family config.json (as a dict) -> ModelProfile (weights counted from the shapes).

    Raises:
        PlanError: a required key is missing or not a positive integer (names the key).
    """
    def need(key: str) -> int:
        v = config.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise PlanError(f"config.{key}: must be a positive integer, got {v!r}")
        return v

    hidden, layers, vocab = need("hidden_size"), need("num_hidden_layers"), need("vocab_size")
    inter, heads = need("intermediate_size"), need("num_attention_heads")
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o + k, v
    mlp = 3 * hidden * inter  # gate, up, down
    layer = (attn + mlp + 2 * hidden) * dtype_bytes  # + two norms
    embed = vocab * hidden * dtype_bytes
    head = (vocab * hidden + hidden) * dtype_bytes  # lm_head (or the tied embedding) + final norm, on the tail
    return ModelProfile(n_layers=layers, layer_bytes=layer, embed_bytes=embed, head_bytes=head,
                        kv_bytes_per_token_layer=2 * kv_heads * head_dim * dtype_bytes,
                        hidden_bytes_per_token=hidden * dtype_bytes)


def _check_inputs(model: ModelProfile, nodes: Sequence[NodeCapacity]) -> None:
    if model.n_layers < 1 or model.layer_bytes < 0:
        raise PlanError("model.n_layers: must be >= 1")
    if not nodes:
        raise PlanError("nodes: need at least one node")
    ids = [n.node_id for n in nodes]
    if len(set(ids)) != len(ids):
        raise PlanError(f"nodes: node ids must be unique, got {ids}")
    for n in nodes:
        if n.free_bytes < 0 or not n.bandwidth_bytes_s > 0:
            raise PlanError(f"nodes[{n.node_id}]: free_bytes must be >= 0 and bandwidth_bytes_s > 0")


def _latency(lat: Mapping[tuple[str, str], float], a: str, b: str, default: float | None) -> float:
    if a == b:
        return 0.0
    v = lat.get((a, b), lat.get((b, a), default))
    if v is None:
        raise PlanError(f"latency_s[{a}, {b}]: no measurement for this link (pass default_latency_s)")
    return v


def _ring_s(order: Sequence[str], lat: Mapping[tuple[str, str], float], default: float | None) -> float:
    """Latency of the hops head -> ... -> tail plus the token's way back tail -> head."""
    if len(order) < 2:
        return 0.0
    hops = [*itertools.pairwise(order), (order[-1], order[0])]
    return sum(_latency(lat, a, b, default) for a, b in hops)


def _best_order(nodes: Sequence[NodeCapacity], lat: Mapping[tuple[str, str], float],
                default: float | None) -> list[NodeCapacity]:
    if len(nodes) <= MAX_EXACT_ORDER:
        first, rest = nodes[0], list(nodes[1:])  # a ring: fix the head, permute the others
        best = min(itertools.permutations(rest),
                   key=lambda p: _ring_s([first.node_id, *(n.node_id for n in p)], lat, default))
        return [first, *best]
    order, left = [nodes[0]], list(nodes[1:])
    while left:
        nxt = min(left, key=lambda n: _latency(lat, order[-1].node_id, n.node_id, default))
        order.append(nxt)
        left.remove(nxt)
    return order


def _layer_counts(model: ModelProfile, chain: Sequence[NodeCapacity], kv_tokens: int,
                  strategy: Strategy) -> list[int] | None:
    """Layers per node in chain order, or None when the model does not fit."""
    per_layer = model.layer_bytes + kv_tokens * model.kv_bytes_per_token_layer
    caps = []
    for i, n in enumerate(chain):
        fixed = (model.embed_bytes if i == 0 else 0) + (model.head_bytes if i == len(chain) - 1 else 0)
        caps.append(max(0, (n.free_bytes - fixed) // per_layer) if n.free_bytes >= fixed else -1)
    if min(caps) < 1 or sum(caps) < model.n_layers or len(chain) > model.n_layers:
        return None
    if strategy == "fastest":  # fill the fastest memory first (decode time is sum of bytes / bandwidth)
        counts = [1] * len(chain)
        left = model.n_layers - len(chain)
        for i in sorted(range(len(chain)), key=lambda i: -chain[i].bandwidth_bytes_s):
            add = min(left, caps[i] - 1)
            counts[i] += add
            left -= add
        return counts
    total = sum(n.free_bytes for n in chain)  # exo: in proportion to free memory, then fix rounding
    counts = [max(1, min(caps[i], round(model.n_layers * n.free_bytes / total))) for i, n in enumerate(chain)]
    while sum(counts) != model.n_layers:
        if sum(counts) > model.n_layers:
            i = max((i for i in range(len(chain)) if counts[i] > 1), key=lambda i: counts[i] / caps[i])
            counts[i] -= 1
        else:
            room = [i for i in range(len(chain)) if counts[i] < caps[i]]
            i = min(room, key=lambda i: counts[i] / caps[i])
            counts[i] += 1
    return counts


def _plan(model: ModelProfile, chain: Sequence[NodeCapacity], counts: Sequence[int], strategy: Strategy,
          lat: Mapping[tuple[str, str], float], default: float | None, link_bytes_s: float,
          kv_tokens: int) -> SplitPlan:
    stages, start = [], 0
    for i, (n, c) in enumerate(zip(chain, counts)):
        weights = c * model.layer_bytes + (model.embed_bytes if i == 0 else 0) + \
            (model.head_bytes if i == len(chain) - 1 else 0)
        # the embedding is a lookup: one row is read per token, not the whole matrix
        read = weights - (model.embed_bytes if i == 0 else 0)
        mem = weights + c * kv_tokens * model.kv_bytes_per_token_layer
        stages.append(StagePlan(n.node_id, start, start + c, mem, read / n.bandwidth_bytes_s))
        start += c
    hops = len(chain) if len(chain) > 1 else 0
    network = _ring_s([n.node_id for n in chain], lat, default) + \
        hops * model.hidden_bytes_per_token / link_bytes_s
    return SplitPlan(tuple(stages), strategy, sum(s.step_s for s in stages), network)


def propose_plans(model: ModelProfile, nodes: Sequence[NodeCapacity],
                  latency_s: Mapping[tuple[str, str], float] | None = None, *, stages: int | None = None,
                  kv_tokens: int = 2048, default_latency_s: float | None = None,
                  link_bytes_s: float = DEFAULT_LINK_BYTES_S, max_plans: int = 8) -> list[SplitPlan]:
    """Plans best first (highest expected tok/s), over node subsets, chain orders and both strategies.

    `stages` fixes the number of stages (else 1..len(nodes)); `kv_tokens` is the KV cache each stage
    reserves per layer (context x concurrent sessions).

    Raises:
        PlanError: malformed input, a missing latency, or no subset of the nodes can hold the model
            (the message gives the bytes needed and the most free memory available).
    """
    _check_inputs(model, nodes)
    lat = dict(latency_s or {})
    counts_to_try = [stages] if stages is not None else list(range(1, len(nodes) + 1))
    if stages is not None and not 1 <= stages <= min(len(nodes), model.n_layers):
        raise PlanError(f"stages: must be in 1..{min(len(nodes), model.n_layers)}, got {stages}")
    plans: dict[tuple[tuple[str, int, int], ...], SplitPlan] = {}
    for k in counts_to_try:
        for subset in itertools.combinations(nodes, k):
            chain = _best_order(sorted(subset, key=lambda n: -n.free_bytes), lat, default_latency_s)
            for strategy in ("memory", "fastest"):
                counts = _layer_counts(model, chain, kv_tokens, strategy)
                if counts is None:
                    continue
                plan = _plan(model, chain, counts, strategy, lat, default_latency_s, link_bytes_s, kv_tokens)
                key = tuple((s.node_id, s.start, s.end) for s in plan.stages)
                if key not in plans or plans[key].tokens_per_s < plan.tokens_per_s:
                    plans[key] = plan
    if not plans:
        need = model.n_layers * (model.layer_bytes + kv_tokens * model.kv_bytes_per_token_layer) + \
            model.embed_bytes + model.head_bytes
        raise PlanError(f"the model needs {need} bytes (weights + KV cache for {kv_tokens} tokens) and no "
                        f"{'set' if stages is None else f'{stages}-node set'} of nodes holds it "
                        f"(most free on one node: {max(n.free_bytes for n in nodes)} bytes)")
    return sorted(plans.values(), key=lambda p: -p.tokens_per_s)[:max_plans]


def format_plans(plans: Sequence[SplitPlan]) -> str:
    """A text table for `aiosd llm plan`: one line per plan, its ranges and expected tok/s."""
    lines = [f"{'#':>2}  {'tok/s':>8}  {'compute ms':>10}  {'network ms':>10}  strategy  stages"]
    for i, p in enumerate(plans, 1):
        ranges = "  ".join(f"{s.node_id}[{s.start},{s.end})" for s in p.stages)
        lines.append(f"{i:>2}  {p.tokens_per_s:>8.1f}  {p.compute_s * 1e3:>10.2f}  {p.network_s * 1e3:>10.2f}  "
                     f"{p.strategy:<8}  {ranges}")
    return "\n".join(lines)
