"""A split stage: layers [a, b) of a checkpoint with a KV cache per session, fed token ids or hidden states.

Only the range's weights are loaded (embeddings on the first stage, norm + lm_head on the last). A stage
that lost a session's cache (restarted, evicted) answers CacheMiss; the entry then rebuilds it by
replaying the session's history (Petals), see pipeline.py. Frames in and out use tensor_wire.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from sdk.llm import tensor_wire
from sdk.llm.decoder import DecoderStack
from sdk.llm.errors import CacheMiss, InvalidRequest


class PipelineStage:
    """One layer range serving up to `max_sessions` sessions' caches (LRU eviction); thread-safe."""

    def __init__(self, model_dir: str, layers: tuple[int, int], *, dtype: str = "float32", device: str = "cpu",
                 max_sessions: int = 8, max_context: int | None = None) -> None:
        self.stack = DecoderStack(model_dir, layers=layers, dtype=dtype, device=device)
        self.start, self.end = self.stack.start, self.stack.end
        self.first, self.last = self.stack.first, self.stack.last
        self.context = min(self.stack.context, max_context or self.stack.context)
        self.cache = self.stack.new_cache(max_sessions, self.context)
        self._sessions: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def cached_len(self, session_id: str) -> int:
        """Positions this stage holds for a session (0 when unknown)."""
        with self._lock:
            slot = self._sessions.get(session_id)
            return 0 if slot is None else self.cache.lengths[slot]

    def drop(self, session_id: str) -> None:
        """Free a session's cache (no error when unknown)."""
        with self._lock:
            slot = self._sessions.pop(session_id, None)
            if slot is not None:
                self.cache.reset(slot, 0)

    def _slot(self, session_id: str, start: int) -> int:
        slot = self._sessions.get(session_id)
        if start == 0:
            if slot is None:
                used = set(self._sessions.values())
                free = [s for s in range(self.cache.slots) if s not in used]
                if free:
                    slot = free[0]
                else:
                    _, slot = self._sessions.popitem(last=False)
            self.cache.reset(slot, 0)
            self._sessions[session_id] = slot
        elif slot is None or self.cache.lengths[slot] != start:
            raise CacheMiss(session_id, 0 if slot is None else self.cache.lengths[slot], start)
        self._sessions.move_to_end(session_id)
        return slot

    def _check(self, x: torch.Tensor, start: int) -> None:
        if self.first:
            if x.dim() != 1 or x.dtype != torch.long:
                raise InvalidRequest("input", f"the first stage takes token ids [T] (int64), got {x.dtype} {list(x.shape)}")
        elif x.dim() != 2 or x.shape[1] != self.stack.hidden_size:
            raise InvalidRequest("input", f"stage [{self.start}, {self.end}) takes hidden states "
                                          f"[T, {self.stack.hidden_size}], got {list(x.shape)}")
        if x.shape[0] < 1 or start < 0 or start + x.shape[0] > self.context:
            raise InvalidRequest("start", f"positions [{start}, {start + x.shape[0]}) exceed the context of "
                                          f"{self.context} tokens")

    def forward(self, session_id: str, x: torch.Tensor, start: int) -> torch.Tensor:
        """Continue a session at position `start` (0 starts it afresh).

        x is token ids [T] on the first stage, else hidden states [T, hidden]. Returns hidden states
        [T, hidden], or on the last stage the float32 logits of the last position [vocab].

        Raises:
            CacheMiss: start > 0 but this stage holds a different number of positions for the session.
            InvalidRequest: x has the wrong dtype or shape, or the positions exceed the context.
        """
        self._check(x, start)
        with self._lock:
            slot = self._slot(session_id, start)
            out = self.stack.forward(self.cache, [slot], [start], x[None].to(self.stack.device))
        return out[0]

    def forward_batch(self, rows: list[tuple[str, torch.Tensor, int]]) -> list[torch.Tensor]:
        """forward() for several sessions' decode steps at once: rows of (session_id, x of one token, start),
        one batched pass over their cache slots (continuous batching inside a stage).

        Raises:
            CacheMiss: for the first row whose session the stage does not hold at `start` (no row runs).
            InvalidRequest: a row is not a single position, or names a session twice.
        """
        if not rows:
            return []
        if len({sid for sid, _, _ in rows}) != len(rows):
            raise InvalidRequest("rows", "each session may appear once per batch")
        for sid, x, start in rows:
            self._check(x, start)
            if x.shape[0] != 1 or start == 0:
                raise InvalidRequest("rows", f"session {sid!r}: a batched row is one decode position after a prefill")
        with self._lock:
            slots = [self._slot(sid, start) for sid, _, start in rows]
            order = sorted(range(len(rows)), key=lambda i: slots[i])  # ascending slots: contiguous views
            x = torch.stack([rows[i][1] for i in order]).to(self.stack.device)
            out = self.stack.forward(self.cache, [slots[i] for i in order], [rows[i][2] for i in order], x)
        result: list[torch.Tensor] = [out[0]] * len(rows)
        for k, i in enumerate(order):
            result[i] = out[k]
        return result

    def forward_frame(self, session_id: str, frame: bytes, start: int) -> bytes:
        """forward() with the input and output as tensor_wire frames (what crosses the network)."""
        return tensor_wire.encode(self.forward(session_id, tensor_wire.decode(frame), start))

    def stateless(self, x: torch.Tensor) -> torch.Tensor:
        """Run a whole sequence [T] / [T, hidden] from position 0 with a scratch cache (for replays)."""
        self._check(x, 0)
        scratch = self.stack.new_cache(1, max(1, int(x.shape[0])))
        return self.stack.forward(scratch, [0], [0], x[None].to(self.stack.device))[0]

    def rebuild(self, session_id: str, history: torch.Tensor) -> None:
        """Replace a session's cache by replaying its history (token ids or the hidden states of them)."""
        self.forward(session_id, history, 0)
