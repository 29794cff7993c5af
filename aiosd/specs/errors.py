"""Errors of the spec parser: every rejection is a list of problems, each naming a JSON path.

    AiosdError
    └── SpecError (also ValueError)     a spec document is wrong; `.problems` lists (path, message)

A `SpecError` always carries at least one `Problem`; `str()` is one sentence per problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from aiosd.errors import AiosdError, describe_type

# Why 20: a fuzzed or badly generated document can hold thousands of errors; the first 20 are
# enough to act on, and the message stays readable in a terminal.
MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document: where (`path`, dotted with [i] for lists) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def join_path(base: str, key: str | int) -> str:
    """`join_path("a.b", 2) == "a.b[2]"`, `join_path("a", "c") == "a.c"`."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def loc_to_path(base: str, loc: Iterable[str | int]) -> str:
    """Turn a pydantic error location into a dotted path under `base`.

    Union tags (our own, written `<tag>`) are dropped: users never wrote them.
    """
    path = base
    for part in loc:
        if isinstance(part, str) and part.startswith("<") and part.endswith(">"):
            continue
        path = join_path(path, part)
    return path


class SpecError(AiosdError, ValueError):
    """A spec document is wrong; nothing was stored or changed."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            problems = [Problem("", "invalid document")]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        shown = [str(p) for p in self.problems[:MAX_PROBLEMS_SHOWN]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more problems")
        return "\n".join(shown)

    def __str__(self) -> str:
        return self._render()

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.problems]

    @classmethod
    def at(cls, path: str, message: str) -> SpecError:
        return cls([Problem(path, message)])

    @classmethod
    def from_validation(cls, exc: ValidationError, base: str) -> SpecError:
        """Convert a pydantic error into problems with paths under `base`."""
        return cls(problems_from_validation(exc, base))


def problems_from_validation(exc: ValidationError, base: str) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        message = _message(err["type"], err["msg"])
        if err["type"] in _TYPE_WORDS:
            message = f"{message}, got {describe_type(err.get('input'))}"
        problems.append(Problem(loc_to_path(base, err["loc"]), message))
    return problems


_TYPE_WORDS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
}




def _message(kind: str, msg: str) -> str:
    # pydantic's text, made to read as "what was expected" (`must be ...`).
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known key here"
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if msg.startswith("Input should be "):
        return "must be " + msg[len("Input should be ") :]
    return msg[:1].lower() + msg[1:]


__all__ = [
    "MAX_PROBLEMS_SHOWN",
    "Problem",
    "SpecError",
    "describe_type",
    "join_path",
    "loc_to_path",
    "problems_from_validation",
]
