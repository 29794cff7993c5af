"""Bench: parse + validate the AIOS example block spec (and resolve it), documents/s.

Baseline in the same run: `json.loads` of the same text (the floor any parser pays).
Target (issue 6): >= 5,000 documents/s for parse + validate. Usage: python bench/specs_parse.py [seconds]
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from collections.abc import Callable

from aiosd.policies import AIOS_EXAMPLE_OVERRIDES, builtin_registry
from aiosd.specs import ParsedBlock, ParsedComponent, parse_document, parse_documents, resolve_block

EXAMPLES = pathlib.Path("/work/shared/reference/aios-examples")
BLOCK = (EXAMPLES / "yolov5-block_block.json").read_text()
COMPONENT = (EXAMPLES / "yolov5-block_component.json").read_text()


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()  # warm up
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn()
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    registry = builtin_registry(AIOS_EXAMPLE_OVERRIDES)
    [comp] = parse_documents(COMPONENT)
    assert isinstance(comp, ParsedComponent)
    decoded = json.loads(BLOCK)

    def full() -> None:
        [doc] = parse_documents(BLOCK)
        assert isinstance(doc, ParsedBlock)

    def resolved() -> None:
        [doc] = parse_documents(BLOCK)
        assert isinstance(doc, ParsedBlock)
        resolve_block(doc, comp, catalog=registry)

    base = rate(lambda: json.loads(BLOCK), seconds)
    validate = rate(lambda: parse_document(decoded), seconds)
    text = rate(full, seconds)
    with_resolve = rate(resolved, seconds)
    print(f"json.loads baseline                 {base:10.0f} docs/s")
    print(f"validate (decoded dict)             {validate:10.0f} docs/s")
    print(
        f"parse + validate (text)             {text:10.0f} docs/s  ({base / text:.1f}x json.loads cost)"
        f"  target >= 5000: {'PASS' if text >= 5000 else 'FAIL'}"
    )
    print(f"parse + validate + resolve/policies {with_resolve:10.0f} docs/s")


if __name__ == "__main__":
    main()
