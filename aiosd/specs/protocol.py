"""The AIOS protocol mini-language: parse field specs once, then check values against them.

A protocol maps field names to `{type, description, min, max, choices, pattern, length,
max_length, properties, items, required}`. This module does not know where a protocol is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiosd.specs.errors import Problem, SpecError, describe_type, join_path

FieldType = Literal["string", "number", "integer", "boolean", "array", "object", "any"]
_TYPES: frozenset[str] = frozenset({"string", "number", "integer", "boolean", "array", "object", "any"})
_KNOWN_KEYS = frozenset(
    {
        "type",
        "description",
        "min",
        "max",
        "choices",
        "pattern",
        "length",
        "max_length",
        "properties",
        "items",
        "required",
    }
)
# Why 32: protocols describe JSON payloads written by hand; deeper nesting is a generator bug
# and would let one document cost unbounded recursion.
MAX_PROTOCOL_DEPTH = 32
# Why 1,000: a value checked against a protocol comes from users at the edge; checking stops
# collecting problems after this many so one huge wrong array cannot cost unbounded memory.
MAX_VALUE_PROBLEMS = 1000


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One compiled field of a protocol."""

    type: FieldType = "any"
    description: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: re.Pattern[str] | None = None
    length: int | None = None
    max_length: int | None = None
    properties: Protocol | None = None
    items: FieldSpec | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class Protocol:
    """Named fields plus the names an object must carry."""

    fields: Mapping[str, FieldSpec]
    required: frozenset[str] = frozenset()

    def __contains__(self, name: object) -> bool:
        return name in self.fields


EMPTY_PROTOCOL = Protocol(fields={})


def parse_protocol(raw: object, path: str) -> Protocol:
    """Compile a protocol mapping (field name -> field spec).

    Raises:
        SpecError: naming the path of every malformed field spec.
    """
    problems: list[Problem] = []
    proto = _parse_protocol(raw, path, problems, 0, None)
    if problems:
        raise SpecError(problems)
    return proto


def _parse_protocol(
    raw: object, path: str, problems: list[Problem], depth: int, required_raw: object
) -> Protocol:
    if not isinstance(raw, dict):
        problems.append(
            Problem(path, f"must be an object mapping field names to field specs, got {describe_type(raw)}")
        )
        return EMPTY_PROTOCOL
    if depth > MAX_PROTOCOL_DEPTH:
        problems.append(Problem(path, f"is nested deeper than {MAX_PROTOCOL_DEPTH} levels"))
        return EMPTY_PROTOCOL
    fields: dict[str, FieldSpec] = {}
    for name, spec in raw.items():
        fields[name] = _parse_field(spec, join_path(path, name), problems, depth + 1)
    required = {n for n, f in fields.items() if f.required}
    if required_raw is not None:
        req_path = path.rsplit(".", 1)[0] + ".required" if "." in path else "required"
        if not isinstance(required_raw, list) or not all(isinstance(r, str) for r in required_raw):
            problems.append(Problem(req_path, "must be a list of field names"))
        else:
            for i, r in enumerate(required_raw):
                if r not in fields:
                    problems.append(
                        Problem(join_path(req_path, i), f"names '{r}', which is not in properties")
                    )
            required.update(required_raw)
    return Protocol(fields=fields, required=frozenset(required))


def _parse_field(raw: object, path: str, problems: list[Problem], depth: int) -> FieldSpec:
    if not isinstance(raw, dict):
        problems.append(
            Problem(path, f'must be a field spec object like {{"type": "string"}}, got {describe_type(raw)}')
        )
        return FieldSpec()
    if depth > MAX_PROTOCOL_DEPTH:
        problems.append(Problem(path, f"is nested deeper than {MAX_PROTOCOL_DEPTH} levels"))
        return FieldSpec()
    start = len(problems)
    ftype = raw.get("type", "any")
    if not isinstance(ftype, str) or ftype not in _TYPES:
        problems.append(Problem(join_path(path, "type"), f"must be one of {', '.join(sorted(_TYPES))}"))
        ftype = "any"
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        problems.append(Problem(join_path(path, "description"), "must be a string"))
        desc = ""
    lo = _number_or_none(raw, "min", path, problems)
    hi = _number_or_none(raw, "max", path, problems)
    if lo is not None and hi is not None and lo > hi:
        problems.append(Problem(join_path(path, "max"), f"must be >= min ({_fmt(lo)})"))
    length = _count_or_none(raw, "length", path, problems)
    max_length = _count_or_none(raw, "max_length", path, problems)
    choices: tuple[Any, ...] | None = None
    if "choices" in raw:
        if isinstance(raw["choices"], list) and raw["choices"]:
            choices = tuple(raw["choices"])
        else:
            problems.append(Problem(join_path(path, "choices"), "must be a non-empty list"))
    pattern: re.Pattern[str] | None = None
    if "pattern" in raw:
        pat = raw["pattern"]
        if not isinstance(pat, str):
            problems.append(Problem(join_path(path, "pattern"), "must be a regular expression string"))
        else:
            try:
                pattern = re.compile(pat)
            except (re.error, RecursionError, OverflowError) as exc:
                problems.append(
                    Problem(join_path(path, "pattern"), f"is not a valid regular expression ({exc})")
                )
    properties: Protocol | None = None
    required = False
    req = raw.get("required")
    if "properties" in raw:
        properties = _parse_protocol(
            raw["properties"], join_path(path, "properties"), problems, depth + 1, req
        )
    elif req is not None and not isinstance(req, bool):
        if isinstance(req, list):
            problems.append(
                Problem(join_path(path, "required"), "a list of names needs properties beside it")
            )
        else:
            problems.append(
                Problem(join_path(path, "required"), "must be true/false, or a list of property names")
            )
    if isinstance(req, bool):
        required = req
    items: FieldSpec | None = None
    if "items" in raw:
        items = _parse_field(raw["items"], join_path(path, "items"), problems, depth + 1)
    if len(problems) > start:
        return FieldSpec()
    return FieldSpec(
        type=ftype,  # type: ignore[arg-type]  # checked against _TYPES above
        description=desc,
        min=lo,
        max=hi,
        choices=choices,
        pattern=pattern,
        length=length,
        max_length=max_length,
        properties=properties,
        items=items,
        required=required,
    )


def _number_or_none(raw: dict[str, Any], key: str, path: str, problems: list[Problem]) -> float | None:
    if key not in raw or raw[key] is None:
        return None
    v = raw[key]
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or (isinstance(v, float) and not math.isfinite(v))
    ):
        problems.append(Problem(join_path(path, key), "must be a finite number"))
        return None
    return float(v)


def _count_or_none(raw: dict[str, Any], key: str, path: str, problems: list[Problem]) -> int | None:
    if key not in raw or raw[key] is None:
        return None
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        problems.append(Problem(join_path(path, key), "must be an integer >= 0"))
        return None
    return v


def check_value(proto: Protocol, value: object, path: str, *, allow_unknown: bool = True) -> list[Problem]:
    """Check an object against a protocol; return the problems (empty = valid).

    Keys the protocol does not name are allowed when `allow_unknown` (AIOS specs carry extra keys).
    """
    problems: list[Problem] = []
    _check_object(proto, value, path, problems, allow_unknown)
    return problems


def unknown_keys(proto: Protocol, value: Mapping[str, object], path: str) -> list[Problem]:
    """Keys of `value` that the protocol does not name (for warnings)."""
    known = ", ".join(sorted(proto.fields)) or "none"
    return [
        Problem(join_path(path, k), f"is not in the component's protocol (known: {known})")
        for k in value
        if k not in proto.fields
    ]


def _check_object(
    proto: Protocol, value: object, path: str, problems: list[Problem], allow_unknown: bool
) -> None:
    if not isinstance(value, dict):
        problems.append(Problem(path, f"must be an object, got {describe_type(value)}"))
        return
    for name in sorted(proto.required):
        if name not in value:
            problems.append(Problem(join_path(path, name), "is required"))
    for key, v in value.items():
        spec = proto.fields.get(key)
        if spec is None:
            if not allow_unknown:
                problems.append(Problem(join_path(path, key), "is not a known field"))
            continue
        _check_field(spec, v, join_path(path, key), problems, allow_unknown)
        if len(problems) >= MAX_VALUE_PROBLEMS:
            return


def _check_field(spec: FieldSpec, v: object, path: str, problems: list[Problem], allow_unknown: bool) -> None:
    t = spec.type
    if t == "string":
        if not isinstance(v, str):
            problems.append(Problem(path, f"must be a string, got {describe_type(v)}"))
            return
    elif t == "number" or t == "integer":
        if isinstance(v, bool) or not isinstance(v, int | float):
            problems.append(Problem(path, f"must be a {t}, got {describe_type(v)}"))
            return
        if isinstance(v, float) and not math.isfinite(v):
            problems.append(Problem(path, f"must be a finite {t}, got {v!r}"))
            return
        if t == "integer" and isinstance(v, float) and not v.is_integer():
            problems.append(Problem(path, f"must be an integer, got {v!r}"))
            return
        if spec.min is not None and v < spec.min:
            problems.append(Problem(path, f"must be >= {_fmt(spec.min)}, got {v!r}"))
        if spec.max is not None and v > spec.max:
            problems.append(Problem(path, f"must be <= {_fmt(spec.max)}, got {v!r}"))
    elif t == "boolean":
        if not isinstance(v, bool):
            problems.append(Problem(path, f"must be true or false, got {describe_type(v)}"))
            return
    elif t == "array":
        if not isinstance(v, list):
            problems.append(Problem(path, f"must be an array, got {describe_type(v)}"))
            return
    elif t == "object" and not isinstance(v, dict):
        problems.append(Problem(path, f"must be an object, got {describe_type(v)}"))
        return
    if spec.choices is not None and not any(_same(v, c) for c in spec.choices):
        problems.append(Problem(path, f"must be one of {list(spec.choices)!r}, got {v!r}"[:300]))
    if isinstance(v, str | list):
        if spec.length is not None and len(v) != spec.length:
            problems.append(Problem(path, f"must have length {spec.length}, got {len(v)}"))
        if spec.max_length is not None and len(v) > spec.max_length:
            problems.append(Problem(path, f"must have length <= {spec.max_length}, got {len(v)}"))
    if spec.pattern is not None and isinstance(v, str) and spec.pattern.search(v) is None:
        problems.append(Problem(path, f"must match the pattern {spec.pattern.pattern!r}"))
    if spec.items is not None and isinstance(v, list):
        for i, item in enumerate(v):
            _check_field(spec.items, item, join_path(path, i), problems, allow_unknown)
            if len(problems) >= MAX_VALUE_PROBLEMS:
                return
    if spec.properties is not None and isinstance(v, dict):
        _check_object(spec.properties, v, path, problems, allow_unknown)


def _same(a: object, b: object) -> bool:
    # True == 1 in Python; a protocol's choices must not treat them alike.
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    )


def _fmt(x: float) -> str:
    return str(int(x)) if x.is_integer() else str(x)




__all__ = [
    "EMPTY_PROTOCOL",
    "MAX_PROTOCOL_DEPTH",
    "FieldSpec",
    "FieldType",
    "Protocol",
    "check_value",
    "parse_protocol",
    "unknown_keys",
]
