"""Muxer: joins N packets with the same (session_id, seq_no) into one (vDAG fan-in).

The merged packet's `data` is JSON `{"inputs": [d1, d2, ...]}` in arrival order (each input's data parsed
as JSON, or kept as a string when it is not JSON); files are concatenated in the same order. Pending
joins are capped: the oldest is evicted (FIFO, since callers choose the keys) and counted.
Unlike AIOS's muxer path (reference/aios.md §12.4) this one is exercised by tests.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from sdk.packet import AIOSPacket

# Each pending join holds whole packets (files included); 1024 bounds memory while covering the
# in-flight window of any pipeline whose stages are within ~1000 tasks of each other.
DEFAULT_MAX_PENDING = 1024


def _parsed(data: str) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data


class Muxer:
    """`Muxer(N)`: `add(packet)` returns the merged packet once N inputs of a task arrived, else None."""

    def __init__(self, n_inputs: int = 2, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 1:
            raise ValueError(f"Muxer(n_inputs): must be an integer >= 1, got {n_inputs!r}")
        if max_pending < 1:
            raise ValueError(f"Muxer(max_pending): must be >= 1, got {max_pending!r}")
        self.n_inputs = n_inputs
        self.max_pending = max_pending
        self.evicted = 0
        self.merged = 0
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple[str, int], list[AIOSPacket]] = OrderedDict()

    @property
    def pending(self) -> int:
        """Joins waiting for more inputs."""
        with self._lock:
            return len(self._pending)

    def add(self, packet: AIOSPacket) -> AIOSPacket | None:
        """Add one input; the merged packet when this input completes its join, else None."""
        if self.n_inputs == 1:
            return self._merge([packet])
        key = (packet.session_id, packet.seq_no)
        with self._lock:
            parts = self._pending.get(key)
            if parts is None:
                parts = self._pending[key] = []
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
                    self.evicted += 1
            parts.append(packet)
            if len(parts) < self.n_inputs:
                return None
            del self._pending[key]
            self.merged += 1
        return self._merge(parts)

    # AIOS code may call the muxer by this name.
    process = add

    @staticmethod
    def _merge(parts: list[AIOSPacket]) -> AIOSPacket:
        first = parts[0]
        return AIOSPacket(
            session_id=first.session_id,
            seq_no=first.seq_no,
            data=json.dumps({"inputs": [_parsed(p.data) for p in parts]}),
            files=[f for p in parts for f in p.files],
            frame_ptr=next((p.frame_ptr for p in parts if p.frame_ptr), ""),
            output_ptr=next((p.output_ptr for p in parts if p.output_ptr), ""),
            ts=max(p.ts for p in parts),
        )
