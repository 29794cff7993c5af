"""The AIOS task envelope and the callback result types, as plain dataclasses.

Only types live here (no I/O, no encoding): `wire.py` turns them into msgpack maps and back.
Fields and defaults follow AIOS's AIOSPacket so ported block code reads and writes them unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class AIOSFile:
    """One file carried by a packet: `metadata` is JSON text (AIOS), `file_data` raw bytes (never base64)."""

    metadata: str = ""
    file_data: bytes = b""


# AIOS's protobuf calls the file message FileInfo; ported code may construct it by that name.
FileInfo = AIOSFile


@dataclass(slots=True)
class AIOSPacket:
    """The one task envelope: (session_id, seq_no) is the task identity; `data` is JSON text in and out."""

    session_id: str = ""
    seq_no: int = 0
    data: str = ""
    files: list[AIOSFile] = field(default_factory=list)
    frame_ptr: str = ""
    output_ptr: str = ""
    ts: float = 0.0

    def json(self) -> Any:
        """`data` parsed as JSON (raises json.JSONDecodeError / ValueError when it is not JSON)."""
        return json.loads(self.data) if self.data else None


@dataclass(slots=True)
class PreProcessResult:
    """One work item produced by on_preprocess; on_data receives it as its `entry`."""

    packet: AIOSPacket
    extra_data: Any = None


@dataclass(slots=True)
class OnDataResult:
    """The output of on_data: `output` is JSON-encoded into the reply packet's `data`.

    `files` (not in AIOS; optional) are attached to the reply packet as they are.
    """

    output: Any = None
    files: list[AIOSFile] = field(default_factory=list)
