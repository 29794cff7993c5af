"""Test-only broken builds, for proving that the chaos checkers catch real bugs (issue 19).

`AIOSD_TEST_BREAK` is read once when a component starts; unset (always, outside tests) nothing
here changes behaviour. Known values:
- `ack-before-durable`: the replication driver acknowledges a local registry write at once but
  stores it (LMDB) and gossips it only `ACK_EARLY_DELAY_S` later, so a `kill -9` in that window
  loses an acknowledged write on every node.
"""

from __future__ import annotations

import os

BREAK_ENV = "AIOSD_TEST_BREAK"
ACK_BEFORE_DURABLE = "ack-before-durable"
ACK_EARLY_DELAY_S = 2.0


def broken(what: str) -> bool:
    """Whether this process runs the named broken build (AIOSD_TEST_BREAK, comma-separated)."""
    return what in {w.strip() for w in os.environ.get(BREAK_ENV, "").split(",") if w.strip()}


__all__ = ["ACK_BEFORE_DURABLE", "ACK_EARLY_DELAY_S", "BREAK_ENV", "broken"]
