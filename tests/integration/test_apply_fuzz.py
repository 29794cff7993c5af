"""Mutated AIOS documents through `POST /v1/apply` of a real daemon: never a 500 or a traceback,
always an error with a field, and nothing stored for a rejected document (hypothesis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosd.client import Client
from aiosd.errors import ApiError
from tests.daemons import Daemon
from tests.instances import kill_process_instances

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = json.loads((ROOT / "examples" / "echo" / "component.json").read_text())
BLOCK = json.loads((ROOT / "examples" / "echo" / "block.json").read_text())
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                 st.text(max_size=30), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                           st.integers(), max_size=3))



@pytest.fixture(autouse=True)
def no_leftover_instances(tmp_path: Path) -> Iterator[None]:
    """Instances outlive a stopped daemon (for adoption): kill what a test left under its tmp_path."""
    yield
    kill_process_instances(tmp_path)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def mutate(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> str:
    which = draw(st.sampled_from(["component", "block", "both"]))
    comp, block = COMPONENT, BLOCK
    if which in ("component", "both"):
        comp = mutate(comp, draw(st.sampled_from(paths(comp))), draw(JUNK), draw(st.booleans()))
    if which in ("block", "both"):
        block = mutate(block, draw(st.sampled_from(paths(block))), draw(JUNK), draw(st.booleans()))
    return json.dumps(comp) + "\n" + json.dumps(block)


def test_mutated_documents_never_500_and_store_nothing_when_rejected(daemons: list[Daemon], tmp_path: Path) -> None:
    d = Daemon(tmp_path, "fz", extra=["--driver", "process"]).start()
    daemons.append(d)

    async def post(text: str, dry: bool) -> tuple[int, dict[str, Any] | None, list[Any]]:
        async with Client(d.socket, timeout_s=120) as c:
            try:
                await c.request("POST", "/v1/apply?wait=60" + ("&dry_run=1" if dry else ""), raw=text.encode())
                status, err = 200, None
            except ApiError as e:
                status, err = e.status, {"field": e.field, "message": str(e)}
            stored = (await c.get("/v1/components"))["items"] + (await c.get("/v1/blocks"))["items"]
            if status == 200 and not dry:  # accepted for real: clean up for the next example
                for b in (await c.get("/v1/blocks"))["items"]:
                    await c.delete(f"/v1/blocks/{b['id']}")
                for comp in (await c.get("/v1/components"))["items"]:
                    await c.delete(f"/v1/components/{comp['uri']}")
            return status, err, stored

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated(), st.sampled_from([True, True, True, False]))  # real applies start instances: fewer
    def check(text: str, dry: bool) -> None:
        status, err, stored = asyncio.run(post(text, dry))
        assert status == 200 or 400 <= status < 500, (status, err)
        if err is not None:
            assert err["message"] and "Traceback" not in err["message"] and "internal" not in err["message"]
            assert err["field"] is not None, err
        if dry or err is not None:
            assert stored == []  # dry runs and rejected documents store nothing

    check()
