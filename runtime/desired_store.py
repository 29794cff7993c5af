"""The supervisor's desired state on disk: `<data_dir>/supervisor/desired.json`, written atomically.

A restarted daemon knows what it should run before anyone calls `set_desired` again. Blocking
functions: the supervisor calls them in a thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from runtime.drivers.base import SOCKET_NAME
from runtime.errors import SpecError
from runtime.spec import InstanceSpec, spec_from_json, spec_to_json

log = logging.getLogger("runtime.supervisor")


def save_desired(path: Path, blocks: Mapping[str, Sequence[InstanceSpec]]) -> None:
    doc = {b: [spec_to_json(s) for s in specs] for b, specs in blocks.items()}
    write_atomic(path, json.dumps(doc))


def load_desired(path: Path) -> dict[str, list[InstanceSpec]]:
    """The stored desired blocks; {} when there is no file, or (logged) when it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(text)
        return {b: [spec_from_json(d) for d in specs] for b, specs in doc.items()}
    except (ValueError, AttributeError, SpecError) as e:
        log.error("desired state unreadable; starting empty", extra={"path": str(path), "error": str(e)})
        return {}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def fresh_socket_dir(d: Path) -> None:
    """The instance's socket directory, without a stale socket from the previous run."""
    d.mkdir(parents=True, exist_ok=True)
    (d / SOCKET_NAME).unlink(missing_ok=True)
