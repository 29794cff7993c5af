"""The AIOS filter language: compile a condition tree once, then test records (plain dicts) fast.

`{variable, operator, value}` with `==, !=, IN, IN ANY, >, >=, <, <=, LIKE` on dot paths, and
`{logicalOperator: AND|OR, conditions: [...]}` groups; composite queries (`clusterQuery`, ...)
keyed by entity scope. Fetching records is the caller's job: this module only decides matches.

Semantics (documented, because AIOS left them to MongoDB):
- A dot path walks objects; a list on the way is walked element-wise and the condition holds if
  it holds for any element (MongoDB's rule). A digit segment indexes a list (`gpus.0.memory`).
- Numbers given as strings compare numerically with numeric fields (`"value": "10"` vs 9.5),
  and a numeric string field compares numerically with a number value.
- `IN` / `IN ANY`: the value is a list; a scalar field matches if it is in the list, a list field
  if any element is. A missing field never matches, except for `!=`, which matches it.
- `>`, `<`, ...: numbers (after the coercion above) compare numerically, two strings
  lexicographically; anything else does not match (no error: one odd record must not fail a query).
- `LIKE`: SQL wildcards, `%` any run and `_` one character, over the whole string, case-sensitive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiosd.specs.errors import Problem, SpecError, describe_type, join_path

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

OPERATORS = ("==", "!=", "IN", "IN ANY", ">", ">=", "<", "<=", "LIKE")
LOGICAL_OPERATORS = ("AND", "OR")
# Composite query keys, in AIOS's dependency order (cluster metrics -> clusters -> blocks -> block
# metrics), then the other scopes.
QUERY_SCOPES = (
    "clusterMetricsQuery",
    "clusterQuery",
    "blockQuery",
    "blockMetricsQuery",
    "vdagQuery",
    "vdagMetricsQuery",
    "componentQuery",
    "nodeQuery",
    "nodeMetricsQuery",
    "policyQuery",
    "policyFunctionQuery",
    "policyGraphQuery",
)
# Why these limits: filters arrive in specs and API bodies from users; they bound compile time,
# recursion depth and per-record cost. Real AIOS filters are 1-3 levels and a handful of conditions.
MAX_DEPTH = 32
MAX_CONDITIONS = 1000
MAX_PATH_SEGMENTS = 32
MAX_LIKE_LEN = 1000

_MISSING: Any = object()


class FilterError(SpecError):
    """A filter document is wrong; every problem names its JSON path."""


class _Many(list[Any]):
    """Several values reached through a list on the path: a condition holds if it holds for any."""


class _Ctx:
    __slots__ = ("count", "strict")

    def __init__(self, strict: bool) -> None:
        self.count = 0
        self.strict = strict


def compile_filter(obj: object, path: str = "filter", *, strict: bool = False) -> Predicate:
    """Compile a condition or a logical group into a predicate over dicts.

    With `strict`, testing a record whose field has a type the operator cannot compare (an object
    for `>`, a number for `LIKE`) raises instead of not matching: for queries over one table,
    where such a field means the user wrote the wrong path.

    Raises:
        FilterError: naming the path of the first wrong part (unknown operator, wrong value type, ...);
            in strict mode also from the predicate, naming the condition's `variable`.
    """
    return _compile(obj, path, 0, _Ctx(strict))


def _compile(obj: object, path: str, depth: int, counter: _Ctx) -> Predicate:
    if depth > MAX_DEPTH:
        raise FilterError.at(path, f"is nested deeper than {MAX_DEPTH} levels")
    counter.count += 1
    if counter.count > MAX_CONDITIONS:
        raise FilterError.at(path, f"the filter has more than {MAX_CONDITIONS} conditions")
    if not isinstance(obj, dict):
        raise FilterError.at(
            path, "must be a condition {variable, operator, value} or a group {logicalOperator, conditions}"
        )
    if "logicalOperator" in obj or "conditions" in obj:
        if "variable" in obj:
            raise FilterError.at(path, "must be either a condition or a group, not both")
        return _compile_group(obj, path, depth, counter)
    if "variable" in obj or "operator" in obj:
        return _compile_condition(obj, path, counter.strict)
    raise FilterError.at(
        path, "must be a condition {variable, operator, value} or a group {logicalOperator, conditions}"
    )


def _compile_group(obj: dict[str, Any], path: str, depth: int, counter: _Ctx) -> Predicate:
    op = obj.get("logicalOperator")
    conds = obj.get("conditions")
    # The AIOS vDAG example writes "" around a single condition, where AND and OR agree.
    single = isinstance(conds, list) and len(conds) == 1
    if not isinstance(op, str) or (
        op.strip().upper() not in LOGICAL_OPERATORS and not (single and not op.strip())
    ):
        raise FilterError.at(join_path(path, "logicalOperator"), f"must be AND or OR, got {_show(op)}")
    cpath = join_path(path, "conditions")
    if not isinstance(conds, list) or not conds:
        raise FilterError.at(cpath, "must be a non-empty list of conditions or groups")
    preds = tuple(_compile(c, join_path(cpath, i), depth + 1, counter) for i, c in enumerate(conds))
    if len(preds) == 1:
        return preds[0]
    if op.strip().upper() == "AND":
        return lambda r: all(p(r) for p in preds)
    return lambda r: any(p(r) for p in preds)


def _compile_condition(obj: dict[str, Any], path: str, strict: bool) -> Predicate:
    var = obj.get("variable")
    if not isinstance(var, str) or not var.strip():
        raise FilterError.at(
            join_path(path, "variable"), f"must be a dot path string like gpus.count, got {_show(var)}"
        )
    segs = tuple(var.strip().split("."))
    if len(segs) > MAX_PATH_SEGMENTS or any(not s for s in segs):
        raise FilterError.at(
            join_path(path, "variable"),
            f"must be a dot path of 1..{MAX_PATH_SEGMENTS} non-empty names, got {var[:80]!r}",
        )
    raw_op = obj.get("operator")
    op = " ".join(raw_op.split()).upper() if isinstance(raw_op, str) else None
    if op not in OPERATORS:
        raise FilterError.at(
            join_path(path, "operator"), f"must be one of {', '.join(OPERATORS)}, got {_show(raw_op)}"
        )
    vpath = join_path(path, "value")
    if "value" not in obj:
        raise FilterError.at(vpath, "is required")
    value = obj["value"]
    get = _getter(segs)
    test: Callable[[Any], bool]
    if op in ("==", "!="):
        test = _eq_test(value)
        if op == "!=":
            eq = test
            return lambda r: not _any(get(r), eq, True)
    elif op in ("IN", "IN ANY"):
        if not isinstance(value, list):
            if op == "IN ANY" and _is_scalar(value):
                value = [value]
            else:
                raise FilterError.at(vpath, f"must be a list for {op}, got {describe_type(value)}")
        tests = tuple(_eq_test(v) for v in value)
        test = lambda x: any(t(x) for t in tests)
    elif op == "LIKE":
        if not isinstance(value, str) or len(value) > MAX_LIKE_LEN:
            raise FilterError.at(
                vpath, f"must be a pattern string of <= {MAX_LIKE_LEN} chars for LIKE, got {describe_type(value)}"
            )
        rx = _like_regex(value)
        test = lambda x: isinstance(x, str) and rx.fullmatch(x) is not None
        if strict:
            test = _strict(
                test, lambda x: isinstance(x, str), join_path(path, "variable"), var, "LIKE", "a string"
            )
    else:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise FilterError.at(vpath, f"must be a number or a string for {op}, got {describe_type(value)}")
        test = _order_test(op, value)
        if strict:
            vnum_ok = _num(value) is not None
            sval_ok = isinstance(value, str)
            test = _strict(
                test,
                lambda x: (vnum_ok and _num(x) is not None) or (sval_ok and isinstance(x, str)),
                join_path(path, "variable"),
                var,
                op,
                "a number" if vnum_ok else "a string",
            )
    whole = op in ("==", "IN", "IN ANY")
    return lambda r: _any(get(r), test, whole)


def _strict(
    test: Callable[[Any], bool], fits: Callable[[Any], bool], vpath: str, var: str, op: str, want: str
) -> Callable[[Any], bool]:
    def strict_test(x: Any) -> bool:
        if fits(x):
            return test(x)
        raise FilterError.at(vpath, f"{var[:80]!r} is {describe_type(x)} in this record; {op} needs {want}")

    return strict_test


def _any(v: Any, test: Callable[[Any], bool], whole: bool = False) -> bool:
    if v is _MISSING:
        return False
    if isinstance(v, _Many):
        return any(_any(x, test, whole) for x in v)
    if isinstance(v, list):
        # A list field: the test holds for any element, or (equality only) for the list itself.
        return (whole and test(v)) or any(test(x) for x in v)
    return test(v)


def _getter(segs: tuple[str, ...]) -> Callable[[Record], Any]:
    if len(segs) == 1:
        key = segs[0]

        def get1(r: Record) -> Any:
            return r.get(key, _MISSING) if isinstance(r, Mapping) else _MISSING

        return get1
    return lambda r: _walk(r, segs, 0)


def _walk(cur: Any, segs: tuple[str, ...], start: int) -> Any:
    for i in range(start, len(segs)):
        s = segs[i]
        if isinstance(cur, Mapping):
            cur = cur.get(s, _MISSING)
            if cur is _MISSING:
                return _MISSING
        elif isinstance(cur, list):
            if s.isdigit():
                idx = int(s)
                if idx >= len(cur):
                    return _MISSING
                cur = cur[idx]
                continue
            out = _Many()
            for el in cur:
                got = _walk(el, segs, i)
                if got is not _MISSING:
                    out.append(got)
            return out if out else _MISSING
        else:
            return _MISSING
    return cur


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str) and 0 < len(x) <= 64:
        try:
            f = float(x)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _eq_test(value: Any) -> Callable[[Any], bool]:
    vnum = _num(value)
    if isinstance(value, bool):
        return lambda x: x is value or (isinstance(x, str) and x.lower() == str(value).lower())
    if isinstance(value, str) and value.lower() in ("true", "false"):
        as_bool = value.lower() == "true"
        return lambda x: x == value if not isinstance(x, bool) else x is as_bool
    if vnum is not None:

        def eq_num(x: Any) -> bool:
            if isinstance(x, bool):
                return False
            if x == value:
                return True
            xn = _num(x)
            return xn is not None and xn == vnum

        return eq_num
    return lambda x: not isinstance(x, bool) and x == value


def _order_test(op: str, value: float | str) -> Callable[[Any], bool]:
    vnum = _num(value)
    cmp: Callable[[Any, Any], bool] = {
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }[op]
    sval = value if isinstance(value, str) else None

    def test(x: Any) -> bool:
        if vnum is not None:
            xn = _num(x)
            if xn is not None:
                return cmp(xn, vnum)
        if sval is not None and isinstance(x, str):
            return cmp(x, sval)
        return False

    return test


def _like_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


def _is_scalar(v: object) -> bool:
    return v is None or isinstance(v, bool | int | float | str)




def _show(v: object) -> str:
    return repr(v)[:60] if isinstance(v, str) else describe_type(v)


def _match_all(_: Record) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class CompositeQuery:
    """Compiled `{clusterQuery, clusterMetricsQuery, blockQuery, ...}`: one predicate per scope."""

    predicates: Mapping[str, Predicate]

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes present, in AIOS dependency order."""
        return tuple(s for s in QUERY_SCOPES if s in self.predicates)

    def predicate(self, scope: str) -> Predicate:
        """The scope's predicate; a scope the query does not mention matches everything."""
        if scope not in QUERY_SCOPES:
            raise KeyError(f"unknown query scope {scope!r}; known: {', '.join(QUERY_SCOPES)}")
        return self.predicates.get(scope, _match_all)

    def select(self, scope: str, records: Iterable[Record], limit: int | None = None) -> list[Record]:
        """The records of `scope` that match, in input order, at most `limit`."""
        pred = self.predicate(scope)
        out: list[Record] = []
        for r in records:
            if pred(r):
                out.append(r)
                if limit is not None and len(out) >= limit:
                    break
        return out


def compile_query(obj: object, path: str = "filter", *, strict: bool = False) -> CompositeQuery:
    """Compile a composite query: an object whose keys are scopes (`clusterQuery`, ...).

    Raises:
        FilterError: for an unknown scope key (listing the known ones) or a wrong filter under one.
    """
    if not isinstance(obj, dict):
        raise FilterError.at(
            path, f"must be an object of queries ({', '.join(QUERY_SCOPES[:3])}, ...), got {describe_type(obj)}"
        )
    problems: list[Problem] = []
    preds: dict[str, Predicate] = {}
    for key, sub in obj.items():
        kpath = join_path(path, str(key))
        if key not in QUERY_SCOPES:
            problems.append(Problem(kpath, f"is not a query scope; known: {', '.join(QUERY_SCOPES)}"))
            continue
        try:
            preds[key] = compile_filter(sub, kpath, strict=strict)
        except FilterError as exc:
            problems.extend(exc.problems)
    if problems:
        raise FilterError(problems)
    if not preds:
        raise FilterError.at(path, f"must hold at least one query ({', '.join(QUERY_SCOPES[:3])}, ...)")
    return CompositeQuery(predicates=preds)


__all__ = [
    "LOGICAL_OPERATORS",
    "OPERATORS",
    "QUERY_SCOPES",
    "CompositeQuery",
    "FilterError",
    "Predicate",
    "Record",
    "compile_filter",
    "compile_query",
]
