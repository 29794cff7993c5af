"""Shared fixtures: real daemons that are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon
from tests.instances import kill_process_instances


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """A list the test appends started Daemons to; all are stopped at the end, and the block
    instances they started (which outlive a daemon on purpose) are killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()
    kill_process_instances(tmp_path)
