"""Split planning (aiosd.llm.plan): pure, table-driven, no torch."""

from __future__ import annotations

import pytest

from aiosd.llm.plan import (
    ModelProfile,
    NodeCapacity,
    PlanError,
    format_plans,
    profile_from_config,
    propose_plans,
)

GB = 1 << 30
# 8 layers of 1 GB, 0.5 GB embeddings and head, no KV to keep the arithmetic readable.
MODEL = ModelProfile(n_layers=8, layer_bytes=GB, embed_bytes=GB // 2, head_bytes=GB // 2,
                     kv_bytes_per_token_layer=0, hidden_bytes_per_token=8192)


def test_profile_from_a_llama_config() -> None:
    cfg = {"hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 512, "intermediate_size": 128,
           "num_attention_heads": 4, "num_key_value_heads": 2}
    p = profile_from_config(cfg, dtype_bytes=4)
    # q,o: 64x64 each; k,v: 64x32 each; mlp 3x64x128; two norms of 64
    assert p.layer_bytes == (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64) * 4
    assert p.embed_bytes == 512 * 64 * 4 and p.head_bytes == (512 * 64 + 64) * 4
    assert p.kv_bytes_per_token_layer == 2 * 2 * 16 * 4 and p.hidden_bytes_per_token == 256
    with pytest.raises(PlanError, match="config.vocab_size"):
        profile_from_config({**cfg, "vocab_size": 0})


def test_one_node_that_fits_gives_the_fastest_plan_and_the_formula() -> None:
    big = NodeCapacity("a", 20 * GB, 100e9)
    small = NodeCapacity("b", 20 * GB, 100e9)
    plans = propose_plans(MODEL, [big, small], {("a", "b"): 0.002})
    best = plans[0]
    assert len(best.stages) == 1 and (best.stages[0].start, best.stages[0].end) == (0, 8)
    assert best.compute_s == pytest.approx((8 * GB + GB // 2) / 100e9)  # embedding is a lookup, not read
    assert best.network_s == 0
    two = next(p for p in plans if len(p.stages) == 2)
    assert two.tokens_per_s < best.tokens_per_s  # the split pays two hops per token (exo's lesson)
    assert two.network_s == pytest.approx(2 * 0.002 + 2 * 8192 / 125e6)


def test_model_too_big_for_any_single_node_is_split_in_proportion_to_memory() -> None:
    a, b = NodeCapacity("a", 6 * GB, 50e9), NodeCapacity("b", 3 * GB + GB // 2, 50e9)
    plans = propose_plans(MODEL, [a, b], default_latency_s=0.001)
    assert all(len(p.stages) == 2 for p in plans)
    mem = next(p for p in plans if p.strategy == "memory")
    assert [(s.node_id, s.start, s.end) for s in mem.stages] == [("a", 0, 5), ("b", 5, 8)]
    for s in mem.stages:
        assert s.memory_bytes <= {"a": a, "b": b}[s.node_id].free_bytes


def test_fastest_strategy_puts_more_layers_on_faster_memory() -> None:
    gpu = NodeCapacity("gpu", 8 * GB, 1000e9, "gpu")
    cpu = NodeCapacity("cpu", 64 * GB, 50e9)
    plans = propose_plans(MODEL, [gpu, cpu], default_latency_s=0.0005, stages=2)
    fast = next(p for p in plans if p.strategy == "fastest")
    on_gpu = sum(s.end - s.start for s in fast.stages if s.node_id == "gpu")
    assert on_gpu >= 6
    assert plans[0].tokens_per_s >= max(p.tokens_per_s for p in plans)


def test_chain_order_minimises_the_ring_latency() -> None:
    nodes = [NodeCapacity(n, 3 * GB, 50e9) for n in "acbd"]
    near = {("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")}  # a ring of 1 ms links; the diagonals are 50 ms
    lat = {(x, y): (0.001 if (x, y) in near or (y, x) in near else 0.050) for x in "abcd" for y in "abcd" if x < y}
    plan = propose_plans(MODEL, nodes, lat, stages=4)[0]
    assert plan.network_s == pytest.approx(4 * 0.001 + 4 * 8192 / 125e6)
    order = "".join(s.node_id for s in plan.stages)
    assert order in {"abcd", "adcb", "bcda", "badc", "cdab", "cbad", "dabc", "dcba"}


@pytest.mark.parametrize(("nodes", "kw", "match"), [
    ([NodeCapacity("a", 2 * GB, 1e9)], {}, "needs .* bytes"),
    ([NodeCapacity("a", 5 * GB, 1e9), NodeCapacity("b", 5 * GB, 1e9)], {}, r"latency_s\[a, b\]"),
    ([NodeCapacity("a", GB, 1e9), NodeCapacity("a", GB, 1e9)], {}, "unique"),
    ([NodeCapacity("a", 20 * GB, 0)], {}, "bandwidth"),
    ([NodeCapacity("a", 20 * GB, 1e9)], {"stages": 2}, "stages: must be in 1..1"),
    ([], {}, "at least one node"),
])
def test_bad_inputs_and_impossible_plans_are_clear(nodes: list[NodeCapacity], kw: dict[str, int],
                                                   match: str) -> None:
    with pytest.raises(PlanError, match=match):
        propose_plans(MODEL, nodes, **kw)  # type: ignore[arg-type]


def test_kv_cache_reservation_counts_against_memory() -> None:
    kv = ModelProfile(n_layers=8, layer_bytes=GB, embed_bytes=0, head_bytes=0, kv_bytes_per_token_layer=1 << 20,
                      hidden_bytes_per_token=8192)
    node = NodeCapacity("a", 9 * GB, 1e11)
    assert propose_plans(kv, [node], kv_tokens=0)
    with pytest.raises(PlanError):
        propose_plans(kv, [node], kv_tokens=1024)  # 8 layers x 1 GiB of KV more


def test_format_lists_every_plan() -> None:
    plans = propose_plans(MODEL, [NodeCapacity("a", 20 * GB, 1e11), NodeCapacity("b", 20 * GB, 1e11)],
                          default_latency_s=0.001)
    text = format_plans(plans)
    assert text.count("\n") == len(plans) and "a[0,8)" in text and "tok/s" in text
