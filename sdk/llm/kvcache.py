"""KV cache in fixed slots: one slot per session, K/V buffers [slots, kv_heads, max_len, head_dim] per layer.

Sessions of different lengths decode in one batch: each row writes its new K/V at its own position and
attends over its own prefix (the mask is built by decoder.py). Freeing a slot is O(1) and its memory is
reused by the next session (vLLM-style preallocation: the capacity is fixed at start and reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True, slots=True)
class CacheShape:
    """What one layer's K/V looks like per token."""

    kv_heads: int
    head_dim: int


class SlotKVCache:
    """K/V buffers for layers [first_layer, first_layer + n_layers) and `slots` sessions of <= max_len tokens."""

    def __init__(self, *, first_layer: int, n_layers: int, slots: int, max_len: int, shape: CacheShape,
                 dtype: torch.dtype, device: torch.device) -> None:
        if slots < 1 or max_len < 1:
            raise ValueError("slots and max_len must be >= 1")
        self.first_layer = first_layer
        self.slots = slots
        self.max_len = max_len
        dims = (slots, shape.kv_heads, max_len, shape.head_dim)
        self.k = [torch.zeros(dims, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(dims, dtype=dtype, device=device) for _ in range(n_layers)]
        self.lengths = [0] * slots
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.bytes_per_token = 2 * n_layers * shape.kv_heads * shape.head_dim * itemsize

    @property
    def capacity_bytes(self) -> int:
        """Bytes preallocated for all slots."""
        return self.bytes_per_token * self.slots * self.max_len

    def used_bytes(self) -> int:
        """Bytes holding live tokens (sum of the slots' lengths)."""
        return self.bytes_per_token * sum(self.lengths)

    def reset(self, slot: int, length: int = 0) -> None:
        """Keep only the first `length` positions of a slot (0 frees it); stale K/V beyond is masked out."""
        self.lengths[slot] = length

    def view(self, slots: list[int], starts: list[int], n_new: int) -> BatchView:
        """The cache object one forward pass of these rows passes to the attention layers."""
        for s, start in zip(slots, starts):
            if start + n_new > self.max_len:
                raise ValueError(f"slot {s}: {start + n_new} positions exceed max_len {self.max_len}")
        return BatchView(self, slots, starts, n_new)

    def commit(self, view: BatchView) -> None:
        """Record the positions a finished forward pass wrote."""
        for s, start in zip(view.slots, view.starts):
            self.lengths[s] = start + view.n_new


class BatchView:
    """Duck-types transformers' Cache.update for one forward pass over a batch of slots."""

    def __init__(self, cache: SlotKVCache, slots: list[int], starts: list[int], n_new: int) -> None:
        self.cache = cache
        self.slots = slots
        self.starts = starts
        self.n_new = n_new
        self.kv_len = max(starts) + n_new
        device = cache.k[0].device if cache.k else torch.device("cpu")
        lo = slots[0]
        self._range = slots == list(range(lo, lo + len(slots)))  # contiguous rows: views, no gather copy
        self._slot_t = torch.tensor(slots, dtype=torch.long, device=device)
        self._pos_t = torch.tensor(starts, dtype=torch.long, device=device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this pass's K/V ([B, kv_heads, n_new, head_dim]) and return each row's K/V up to kv_len."""
        c = self.cache
        i = layer_idx - c.first_layer
        kb, vb = c.k[i], c.v[i]
        if len(self.slots) == 1:  # one row: plain slice copies, no index_put
            s, start = self.slots[0], self.starts[0]
            kb[s, :, start:start + self.n_new].copy_(key_states[0])
            vb[s, :, start:start + self.n_new].copy_(value_states[0])
        elif self.n_new == 1:
            kb[self._slot_t, :, self._pos_t] = key_states[:, :, 0]
            vb[self._slot_t, :, self._pos_t] = value_states[:, :, 0]
        else:
            for row, (s, start) in enumerate(zip(self.slots, self.starts)):
                kb[s, :, start:start + self.n_new] = key_states[row]
                vb[s, :, start:start + self.n_new] = value_states[row]
        if self._range:
            lo = self.slots[0]
            hi = lo + len(self.slots)
            return kb[lo:hi, :, :self.kv_len], vb[lo:hi, :, :self.kv_len]
        return kb[self._slot_t, :, :self.kv_len], vb[self._slot_t, :, :self.kv_len]
