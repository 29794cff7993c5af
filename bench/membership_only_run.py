"""Run `aiosd ...` with only the membership service (bench/idle_daemons.py --only-membership).

Usage: python bench/membership_only_run.py PYTHON -m aiosd.cli run ARGS  (the tail is tests.daemons' command)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosd.node
from aiosd.cli.main import main
from aiosd.membership import api as membership_api
from aiosd.membership.service import membership_service
from aiosd.node import Role


def _only() -> list[Role]:
    return [Role(membership_service, membership_api.membership_routes)]


if __name__ == "__main__":
    setattr(aiosd.node, "default_roles", _only)  # noqa: B010  # bench-only attribution switch
    sys.exit(main(sys.argv[4:]))
