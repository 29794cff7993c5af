"""The AIOS filter language: operators, coercion, dot paths over lists, groups, errors with paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosd.specs.filters import QUERY_SCOPES, FilterError, compile_filter, compile_query

CLUSTER: dict[str, Any] = {
    "id": "c1",
    "regionId": "eu-west",
    "gpus": {"count": 6, "memory": 98304},
    "clusterMetadata": {"vendor": "dma-bangalore", "name": "Lab One"},
    "tags": ["gpu", "decoder"],
    "nodes": {"nodeData": [{"id": "n1", "gpus": {"count": 2}}, {"id": "n2", "gpus": {"count": 4}}]},
    "load": "7.5",
    "live": True,
}


def c(variable: Any, operator: Any, value: Any) -> dict[str, Any]:
    return {"variable": variable, "operator": operator, "value": value}


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (c("gpus.count", ">", "5"), True),  # AIOS writes numbers as strings
        (c("gpus.count", ">", "6"), False),
        (c("gpus.count", ">=", 6), True),
        (c("gpus.count", "<", 6.5), True),
        (c("gpus.count", "<=", "5.9"), False),
        (c("gpus.count", "==", "6"), True),
        (c("gpus.count", "==", 6.0), True),
        (c("gpus.count", "!=", "6"), False),
        (c("load", "<", 10), True),  # numeric string field vs number
        (c("clusterMetadata.vendor", "==", "dma-bangalore"), True),
        (c("clusterMetadata.vendor", "!=", "acme"), True),
        (c("clusterMetadata.name", ">", "Lab"), True),  # two strings: lexicographic
        (c("clusterMetadata.vendor", ">", 3), False),  # string vs number: no match, no error
        (c("regionId", "IN", ["eu-west", "us-east"]), True),
        (c("regionId", "in", ["us-east"]), False),
        (c("tags", "IN ANY", ["decoder"]), True),
        (c("tags", "in  any", ["tpu"]), False),
        (c("tags", "IN ANY", "gpu"), True),
        (c("tags", "==", "gpu"), True),  # a list field matches if any element does
        (c("tags", "==", ["gpu", "decoder"]), True),
        (c("nodes.nodeData.id", "==", "n2"), True),  # walks lists element-wise
        (c("nodes.nodeData.gpus.count", ">", 3), True),
        (c("nodes.nodeData.gpus.count", ">", 4), False),
        (c("nodes.nodeData.1.id", "==", "n2"), True),
        (c("nodes.nodeData.5.id", "==", "n2"), False),
        (c("clusterMetadata.name", "LIKE", "Lab%"), True),
        (c("clusterMetadata.name", "LIKE", "L_b One"), True),
        (c("clusterMetadata.name", "LIKE", "lab%"), False),
        (c("clusterMetadata.name", "LIKE", "Lab"), False),
        (c("clusterMetadata.name", "LIKE", "La.%"), False),  # regex characters are literal
        (c("missing.path", "==", "x"), False),
        (c("missing.path", "!=", "x"), True),
        (c("gpus.count.deeper", "==", 1), False),
        (c("live", "==", True), True),
        (c("live", "==", "true"), True),
        (c("live", "==", 1), False),  # booleans are not numbers
        (c("gpus.count", "==", True), False),
    ],
)
def test_condition(cond: dict[str, Any], expected: bool) -> None:
    assert compile_filter(cond)(CLUSTER) is expected


def test_groups_nest() -> None:
    f = compile_filter(
        {
            "logicalOperator": "AND",
            "conditions": [
                c("gpus.count", ">=", "3"),
                {
                    "logicalOperator": "or",
                    "conditions": [c("regionId", "==", "x"), c("tags", "IN ANY", ["gpu"])],
                },
            ],
        }
    )
    assert f(CLUSTER)
    assert not f({**CLUSTER, "tags": []})


@pytest.mark.parametrize(
    ("obj", "path", "text"),
    [
        (c("a", "=~", 1), "filter.operator", "must be one of ==, !=, IN, IN ANY"),
        (c("a", 5, 1), "filter.operator", "must be one of"),
        (c("", "==", 1), "filter.variable", "dot path"),
        (c("a..b", "==", 1), "filter.variable", "non-empty names"),
        (c(["a"], "==", 1), "filter.variable", "dot path"),
        ({"variable": "a", "operator": "=="}, "filter.value", "is required"),
        (c("a", "IN", "x"), "filter.value", "must be a list for IN"),
        (c("a", ">", [1]), "filter.value", "must be a number or a string"),
        (c("a", "<", True), "filter.value", "must be a number or a string"),
        (c("a", "LIKE", 3), "filter.value", "pattern string"),
        (
            {"logicalOperator": "", "conditions": [c("a", "==", 1), c("b", "==", 1)]},
            "filter.logicalOperator",
            "AND or OR",
        ),
        ({"logicalOperator": "XOR", "conditions": [c("a", "==", 1)]}, "filter.logicalOperator", "AND or OR"),
        ({"logicalOperator": "AND", "conditions": []}, "filter.conditions", "non-empty list"),
        (
            {
                "logicalOperator": "AND",
                "conditions": [c("a", "==", 1), {"logicalOperator": "OR", "conditions": [7]}],
            },
            "filter.conditions[1].conditions[0]",
            "must be a condition",
        ),
        ({"variable": "a", "logicalOperator": "AND"}, "filter", "not both"),
        ({}, "filter", "must be a condition"),
        ("a == 1", "filter", "must be a condition"),
    ],
)
def test_errors_name_the_path(obj: Any, path: str, text: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_filter(obj)
    assert err.value.problems[0].path == path
    assert text in err.value.problems[0].message


def test_empty_logical_operator_is_read_around_one_condition() -> None:
    # As in the AIOS vDAG example's assignment filter.
    f = compile_filter({"logicalOperator": "", "conditions": [c("block.blockId", "==", "block-0211A2")]})
    assert f({"block": {"blockId": "block-0211A2"}})
    assert not f({"block": {"blockId": "other"}})


def test_depth_and_size_are_bounded() -> None:
    deep: dict[str, Any] = c("a", "==", 1)
    for _ in range(40):
        deep = {"logicalOperator": "AND", "conditions": [deep]}
    with pytest.raises(FilterError, match="nested deeper"):
        compile_filter(deep)
    wide = {"logicalOperator": "OR", "conditions": [c("a", "==", i) for i in range(1001)]}
    with pytest.raises(FilterError, match="more than 1000 conditions"):
        compile_filter(wide)


def test_composite_query_scopes_and_order() -> None:
    q = compile_query(
        {
            "clusterQuery": c("clusterMetadata.vendor", "==", "dma-bangalore"),
            "clusterMetricsQuery": {
                "logicalOperator": "AND",
                "conditions": [
                    c("cluster.vcpu.load_15m", "<", "10"),
                    c("cluster.gpu.totalFreeMem", ">", "9000"),
                ],
            },
        }
    )
    assert q.scopes == ("clusterMetricsQuery", "clusterQuery")
    assert q.predicate("clusterQuery")(CLUSTER)
    metrics = {"cluster": {"vcpu": {"load_15m": 2.5}, "gpu": {"totalFreeMem": 12000}}}
    assert q.predicate("clusterMetricsQuery")(metrics)
    assert not q.predicate("clusterMetricsQuery")({"cluster": {"vcpu": {"load_15m": 12}}})
    assert q.predicate("blockQuery")({})  # not mentioned: matches everything
    assert q.select("clusterQuery", [CLUSTER, {"id": "c2"}, CLUSTER], limit=1) == [CLUSTER]
    with pytest.raises(KeyError):
        q.predicate("nope")


def test_composite_query_errors() -> None:
    with pytest.raises(FilterError) as err:
        compile_query({"clusterQry": c("a", "==", 1), "blockQuery": c("a", "~", 1)}, "p.filter")
    assert err.value.paths == ["p.filter.clusterQry", "p.filter.blockQuery.operator"]
    assert QUERY_SCOPES[0] in err.value.problems[0].message
    with pytest.raises(FilterError, match="at least one query"):
        compile_query({})
    with pytest.raises(FilterError, match="must be an object of queries"):
        compile_query([])


@settings(max_examples=200, deadline=None)
@given(
    field=st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False)),
    value=st.integers(-1000, 1000),
    op=st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
)
def test_string_numbers_compare_like_numbers(field: float, value: int, op: str) -> None:
    as_number = compile_filter(c("x", op, value))({"x": field})
    as_string = compile_filter(c("x", op, str(value)))({"x": field})
    expected = {
        ">": field > value,
        ">=": field >= value,
        "<": field < value,
        "<=": field <= value,
        "==": field == value,
        "!=": field != value,
    }[op]
    assert as_number is expected
    assert as_string is expected


@settings(max_examples=200, deadline=None)
@given(
    obj=st.recursive(
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.sampled_from(["==", "AND", "IN"])
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(["variable", "operator", "value", "logicalOperator", "conditions", "x"]),
                inner,
                max_size=4,
            ),
        ),
        max_leaves=15,
    ),
    record=st.dictionaries(
        st.text(max_size=3),
        st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers())),
        max_size=3,
    ),
)
def test_any_input_compiles_or_fails_with_a_path_and_never_crashes_on_records(obj: Any, record: Any) -> None:
    try:
        pred = compile_filter(obj)
    except FilterError as exc:
        assert all(p.path.startswith("filter") for p in exc.problems)
        return
    assert pred(record) in (True, False)


def test_strict_mode_reports_fields_of_the_wrong_type() -> None:
    loose = compile_filter(c("gpus", ">", "5"))
    strict = compile_filter(c("gpus", ">", "5"), strict=True)
    assert loose(CLUSTER) is False
    with pytest.raises(FilterError) as err:
        strict(CLUSTER)
    assert err.value.problems[0].path == "filter.variable"
    assert err.value.problems[0].message == "'gpus' is an object in this record; > needs a number"
    like = compile_filter(c("gpus.count", "LIKE", "6%"), "q", strict=True)
    with pytest.raises(FilterError, match="LIKE needs a string"):
        like(CLUSTER)
    # Missing fields and fields of the right type never raise; lists are tested element-wise.
    assert compile_filter(c("nope", ">", 1), strict=True)(CLUSTER) is False
    assert compile_filter(c("nodes.nodeData.gpus.count", ">", 3), strict=True)(CLUSTER) is True
    assert compile_filter(c("tags", "LIKE", "dec%"), strict=True)(CLUSTER) is True
    q = compile_query({"clusterQuery": c("regionId", "<", 3)}, strict=True)
    with pytest.raises(FilterError, match="'regionId' is a string in this record"):
        q.predicate("clusterQuery")(CLUSTER)
