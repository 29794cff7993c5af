"""Built-in policies with the AIOS input/output shapes: balancers, autoscalers, health, quota, clusters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosd.policies import PolicyConfigError, PolicyHandle, PolicyInputError, PolicyRunner, builtin_registry

RUNNER = PolicyRunner(builtin_registry())


def load(
    uri: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
) -> PolicyHandle:
    return RUNNER.load(uri, parameters=parameters, settings=settings)


def lb(instances: list[Any], session: str | None = None, **extra: Any) -> dict[str, Any]:
    packet = {"session_id": session} if session else {}
    return {"mode": "load_balance", "packet": packet, "instances": instances, **extra}


# --- load balancers -----------------------------------------------------------------------------


def test_round_robin_cycles() -> None:
    h = load("policy.loadBalancer.round-robin:v1")
    got = [h.eval(lb(["a", "b", "c"]))["instance_id"] for _ in range(5)]
    assert got == ["a", "b", "c", "a", "b"]


def test_least_outstanding_picks_least_loaded_and_rotates_ties() -> None:
    h = load("policy.loadBalancer.least-outstanding:v1")
    assert h.eval(lb(["a", "b", "c"], outstanding={"a": 3, "b": 1, "c": 2}))["instance_id"] == "b"
    items = [{"instance_id": "a", "outstanding": 0}, {"instance_id": "b", "outstanding": 0}]
    assert {h.eval(lb(items))["instance_id"] for _ in range(2)} == {"a", "b"}


def test_session_sticky_keeps_sessions_and_moves_off_dead_instances() -> None:
    h = load("policy.loadBalancer.session-sticky:v1", settings={"session_cache_size": 2})
    first = h.eval(lb(["a", "b"], "s1", outstanding={"a": 0, "b": 5}))["instance_id"]
    assert first == "a"
    # Still "a" although "a" is now busier: stickiness wins while the instance lives.
    assert h.eval(lb(["a", "b"], "s1", outstanding={"a": 9, "b": 0}))["instance_id"] == "a"
    assert h.eval(lb(["b", "c"], "s1", outstanding={"b": 2, "c": 1}))["instance_id"] == "c"
    h.eval(lb(["a"], "s2"))
    h.eval(lb(["a"], "s3"))  # capacity 2: s1 (least recently used) is evicted
    state = h.management("get_current_mapping", {})
    assert set(state["sessions"]) == {"s2", "s3"}
    assert state["evicted"] == 1


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"mode": "load_balance", "instances": []}, "input_data.instances"),
        ({"mode": "estimate", "instances": ["a"]}, "input_data.mode"),
        ({"mode": "load_balance", "instances": [3]}, "input_data.instances[0]"),
        ({"mode": "load_balance", "instances": ["a"], "outstanding": [1]}, "input_data.outstanding"),
    ],
)
def test_balancer_input_errors_name_the_path(data: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyInputError) as err:
        load("policy.loadBalancer.session-sticky:v1").eval(data)
    assert err.value.path == path


# --- autoscalers --------------------------------------------------------------------------------


def block(n: int, queue: float = 0, util: float = 0, lo: int = 1, hi: int = 5) -> dict[str, Any]:
    return {
        "minInstances": lo,
        "maxInstances": hi,
        "instances": [{"instance_id": f"i{k}", "queue_length": queue, "utilization": util} for k in range(n)],
    }


def test_queue_autoscaler_scales_up_within_max_and_respects_cooldown() -> None:
    h = load(
        "policy.autoscaler.queue:v1", {"max_queue": 10}, {"scale_up_cooldown": 30, "scale_down_cooldown": 60}
    )
    out = h.eval({"block_data": block(1, queue=35), "now": 100.0})
    assert out == {"skip": False, "operation": "upscale", "instances_count": 3, "reason": out["reason"]}
    assert h.eval({"block_data": block(2, queue=35), "now": 110.0})["skip"] is True  # cooling down
    assert (
        h.eval({"block_data": block(2, queue=100), "now": 131.0})["instances_count"] == 3
    )  # capped at max 5


def test_queue_autoscaler_scales_down_least_busy_newest_first() -> None:
    h = load("policy.autoscaler.queue:v1", {"max_queue": 10}, {"scale_down_cooldown": 0})
    data = block(4, queue=0)
    data["instances"][0]["queue_length"] = 5
    out = h.eval({"block_data": data, "now": 0.0})
    assert out["operation"] == "downscale"
    assert out["instances_list"] == ["i3", "i2", "i1"]
    assert h.eval({"block_data": block(1, queue=5), "now": 1.0})["skip"] is True  # at min


def test_autoscaler_restores_min_and_max_without_cooldown() -> None:
    h = load("policy.autoscaler.queue:v1", settings={"scale_up_cooldown": 1000, "scale_down_cooldown": 1000})
    assert h.eval({"block_data": block(0, lo=2), "now": 0.0})["instances_count"] == 2
    assert h.eval({"block_data": block(0, lo=2), "now": 1.0})["instances_count"] == 2
    out = h.eval({"block_data": block(7, hi=5), "now": 2.0})
    assert out["operation"] == "downscale" and len(out["instances_list"]) == 2


def test_utilization_autoscaler_follows_hpa_rule_with_tolerance() -> None:
    h = load("policy.autoscaler.utilization:v1", {"target_cpu_utilization": 0.6}, {"scale_up_cooldown": 0})
    assert h.eval({"block_data": block(2, util=0.9), "now": 0.0})["instances_count"] == 1  # ceil(2*1.5)=3
    assert h.eval({"block_data": block(2, util=0.63), "now": 1.0})["skip"] is True  # within 10 %
    assert h.eval({"block_data": block(2, util=90), "now": 2.0})["instances_count"] == 1  # percent accepted
    down = load("policy.autoscaler.utilization:v1", {"target_utilization": 0.8}, {"scale_down_cooldown": 0})
    assert down.eval({"block_data": block(4, util=0.2), "now": 0.0})["instances_list"] == ["i3", "i2", "i1"]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"now": 0.0}, "input_data.block_data"),
        ({"block_data": block(1), "now": "soon"}, "input_data.now"),
        ({"block_data": {**block(1), "maxInstances": 0}, "now": 0.0}, "input_data.block_data.maxInstances"),
        (
            {"block_data": {**block(1), "instances": [{"instance_id": "x", "queue_length": -1}]}, "now": 0.0},
            "input_data.block_data.instances[0].queue_length",
        ),
    ],
)
def test_autoscaler_input_errors_name_the_path(data: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyInputError) as err:
        load("policy.autoscaler.queue:v1").eval(data)
    assert err.value.path == path


# --- health -------------------------------------------------------------------------------------


def test_health_retry_restarts_then_gives_up_and_reports() -> None:
    h = load("policy.health.retry:v1", {"unhealthy_threshold": 2, "max_restarts": 1})
    assert h.eval({"health_check_data": {"a": False, "b": True}})["actions"] == []
    out = h.eval({"health_check_data": {"a": False, "b": True}})
    assert [(x["instance_id"], x["action"]) for x in out["actions"]] == [("a", "restart")]
    assert out["unhealthy"] == ["a"]
    h.eval({"health_check_data": {"a": False}})
    out = h.eval({"health_check_data": {"a": False}})
    assert [(x["instance_id"], x["action"]) for x in out["actions"]] == [("a", "give_up")]
    assert "after 1 restarts" in out["actions"][0]["reason"]
    assert h.eval({"health_check_data": {"a": False}})["actions"] == []  # reported once
    assert h.management("get_state", {})["a"]["given_up"] is True


def test_health_recovery_clears_failures_and_forgets_gone_instances() -> None:
    h = load("policy.health.retry:v1", {"unhealthy_threshold": 2, "max_restarts": 1})
    h.eval({"health_check_data": {"a": False, "b": False}})
    h.eval({"health_check_data": {"a": True, "b": False}})  # b restarts; a recovered
    h.eval({"health_check_data": {"a": False}})  # b is gone
    assert set(h.management("get_state", {})) == {"a"}
    assert h.eval({"health_check_data": {"a": False}})["actions"][0]["action"] == "restart"
    with pytest.raises(PolicyInputError):
        h.eval({"health_check_data": {"a": "down"}})


# --- quota --------------------------------------------------------------------------------------


def test_quota_counts_per_session_and_caller_counts() -> None:
    h = load("policy.quota.per-session:v1", {"max_requests": 2}, {"max_sessions": 2})
    assert [h.eval({"session_id": "s"})["allowed"] for _ in range(3)] == [True, True, False]
    assert h.eval({"session_id": "t"})["allowed"] is True
    assert h.eval({"session_id": "x", "quota": 3})["allowed"] is False
    assert h.eval({"session_id": "x", "quota": 2})["allowed"] is True
    h.management("reset", {"session_id": "s"})
    assert h.eval({"session_id": "s"})["allowed"] is True
    h.eval({"session_id": "u"})  # max_sessions 2: the oldest counter is evicted
    assert len(h.rule.counts) == 2  # type: ignore[attr-defined]  # PerSessionQuota's table
    with pytest.raises(PolicyInputError):
        h.eval({})


# --- cluster allocator --------------------------------------------------------------------------

FILTER = {
    "clusterQuery": {
        "logicalOperator": "AND",
        "conditions": [
            {"variable": "gpus.count", "operator": ">", "value": "5"},
            {"variable": "clusterMetadata.vendor", "operator": "==", "value": "dma-bangalore"},
        ],
    },
    "clusterMetricsQuery": {"variable": "cluster.vcpu.load_15m", "operator": "<", "value": "10"},
}


def test_cluster_filter_selects_and_picks_best_dry_run() -> None:
    h = load("policy.clusterAllocator.filter:v1", {"filter": FILTER}, {"max_candidates": 2})
    good = {
        "id": "c1",
        "gpus": {"count": 8},
        "clusterMetadata": {"vendor": "dma-bangalore"},
        "cluster_metrics": {"cluster": {"vcpu": {"load_15m": 3}}},
    }
    busy = {**good, "id": "c2", "cluster_metrics": {"cluster": {"vcpu": {"load_15m": 30}}}}
    small = {**good, "id": "c3", "gpus": {"count": 2}}
    out = h.eval(
        {
            "action": "selection",
            "filter_result": [good, busy, small, {**good, "id": "c4"}, {**good, "id": "c5"}],
        }
    )
    assert [c["id"] for c in out["clusters"]] == ["c1", "c4"]
    picked = h.eval(
        {
            "action": "post_dry_run",
            "clusters": [
                {"cluster_id": "c1", "score_data": {"score": 0.4}},
                {"cluster_id": "c4", "score_data": {"score": 0.9}},
            ],
        }
    )
    assert picked["cluster_id"] == "c4"
    none = h.eval({"action": "post_dry_run", "clusters": [{"cluster_id": "c1", "score_data": {"score": 0}}]})
    assert none == {"cluster_id": None}


def test_cluster_filter_rejects_bad_filter_with_path() -> None:
    with pytest.raises(PolicyConfigError) as err:
        load(
            "policy.clusterAllocator.filter:v1",
            {"filter": {"clusterQuery": {"variable": "a", "operator": "?", "value": 1}}},
        )
    assert err.value.problems[0].path == "parameters.filter.clusterQuery.operator"


# --- fuzz: built-ins answer or reject their input; they never crash -------------------------------

_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 50),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.sampled_from(["load_balance", "selection", "post_dry_run", "allocation", "dry_run", "a", "b"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "mode",
                    "packet",
                    "instances",
                    "instance_id",
                    "outstanding",
                    "session_id",
                    "block_data",
                    "minInstances",
                    "maxInstances",
                    "queue_length",
                    "utilization",
                    "now",
                    "health_check_data",
                    "quota",
                    "action",
                    "filter_result",
                    "clusters",
                    "score_data",
                    "score",
                    "payload",
                    "nodes",
                    "node_id",
                    "gpus",
                    "vcpus_free",
                    "memory_free_mb",
                    "index",
                    "util_pct",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(uri=st.sampled_from(sorted(builtin_registry().known_uris())), data=_json)
def test_builtins_never_crash_on_odd_input(uri: str, data: Any) -> None:
    handle = load(uri)
    if not isinstance(data, dict):
        data = {"payload": data}
    try:
        out = handle.eval(data)
    except PolicyInputError as exc:
        assert exc.path.startswith("input_data")
        return
    assert isinstance(out, dict)
