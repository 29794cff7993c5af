"""BlockService is assembled from mixins (cluster, loops, serving, planning); a mixin declares what it
needs from the others as stubs that raise NotImplementedError. The class's base order decides which
definition wins, so a stub placed before its implementation would break the daemon at run time."""

from __future__ import annotations

import inspect

from aiosd.blocks.service import BlockService


def test_no_mixin_stub_shadows_an_implementation() -> None:
    shadowed = []
    for name, fn in inspect.getmembers(BlockService, inspect.isfunction):
        if "raise NotImplementedError" in inspect.getsource(fn):
            shadowed.append(f"{name} -> {fn.__qualname__}")
    assert shadowed == []
