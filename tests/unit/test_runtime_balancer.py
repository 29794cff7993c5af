"""Instance choice: least outstanding, rotating ties, session stickiness with a bounded map."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.balancer import Balancer
from runtime.client import InstanceClient
from runtime.errors import NoHealthyInstance
from runtime.spec import Endpoint


class Source:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def healthy(self, block_id: str) -> list[tuple[str, Endpoint]]:
        return [(i, Endpoint(socket=Path(f"/tmp/{i}.sock"))) for i in self.ids] if block_id == "b" else []


def balancer(ids: list[str], **kw: int) -> tuple[Balancer, Source]:
    src = Source(ids)
    return Balancer(src, InstanceClient(), **kw), src


def test_ties_rotate_over_all_instances() -> None:
    bal, _ = balancer(["a", "b", "c"])
    picks = [bal.pick("b")[0] for _ in range(30)]
    assert {p: picks.count(p) for p in "abc"} == {"a": 10, "b": 10, "c": 10}


def test_least_outstanding_wins() -> None:
    bal, _ = balancer(["a", "b"])
    bal._outstanding["a"] = 3  # white-box: simulate in-flight tasks
    assert all(bal.pick("b")[0] == "b" for _ in range(10))


def test_sticky_sessions_stay_until_instance_leaves() -> None:
    bal, src = balancer(["a", "b", "c"])
    first = bal.pick("b", "s1", sticky=True)[0]
    assert all(bal.pick("b", "s1", sticky=True)[0] == first for _ in range(10))
    src.ids.remove(first)
    moved = bal.pick("b", "s1", sticky=True)[0]
    assert moved != first and bal.pick("b", "s1", sticky=True)[0] == moved


def test_sticky_map_is_bounded() -> None:
    bal, _ = balancer(["a", "b"], max_sticky=2)
    for s in ("s1", "s2", "s3"):
        bal.pick("b", s, sticky=True)
    assert bal.sticky_evictions == 1 and len(bal._sticky) == 2


def test_no_healthy_instance_names_the_block() -> None:
    bal, _ = balancer([])
    with pytest.raises(NoHealthyInstance, match="'b'"):
        bal.pick("b")
    with pytest.raises(NoHealthyInstance, match="'other'"):
        bal.pick("other")
