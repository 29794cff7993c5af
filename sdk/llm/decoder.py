"""A contiguous range of a decoder-only checkpoint's layers, run over KV-cache slots.

Loads only the weights it needs from the safetensors files (embeddings on the first range, the final norm
and lm_head on the last), so the unsplit engine (range [0, L)) and a split stage share one code path. The
transformers decoder layers do the math; this module builds positions, masks and the cache view. It does
no scheduling (engine.py) and no networking.
"""

from __future__ import annotations

import inspect
import json
import pathlib
from typing import Any

import torch
from torch import nn

from sdk.llm.errors import ModelLoadError
from sdk.llm.kvcache import CacheShape, SlotKVCache

# Architectures whose module layout is model.{embed_tokens, layers, norm, rotary_emb} + lm_head and whose
# forward adds nothing between those steps (Gemma scales embeddings, so it is not listed).
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str) -> torch.dtype:
    """'float32' | 'float16' | 'bfloat16' -> torch dtype (raises ModelLoadError naming the value)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ModelLoadError(f"dtype: must be one of {', '.join(DTYPES)}, got {name!r}") from None


def _weight_files(model_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Tensor name -> the safetensors file that holds it."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"{index}: not a safetensors index ({e})") from None
        return {k: model_dir / v for k, v in weight_map.items()}
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise ModelLoadError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return dict.fromkeys(f.keys(), single)  # safe_open has keys(), not iteration


def load_config(model_dir: str | pathlib.Path) -> Any:
    """The checkpoint's transformers config (raises ModelLoadError when absent or unsupported)."""
    from transformers import AutoConfig

    path = pathlib.Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json (not a Hugging Face checkpoint directory)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}/config.json: {e}") from None
    if config.model_type not in SUPPORTED:
        raise ModelLoadError(f"{path}/config.json: model_type {config.model_type!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED)})")
    return config


def context_length(config: Any) -> int:
    """Longest sequence the model attends over in full (max positions, capped by a sliding window)."""
    n = int(config.max_position_embeddings)
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) and isinstance(window, int) and window > 0:
        n = min(n, window)
    return n


class DecoderStack:
    """Layers [start, end) of a checkpoint; embeds token ids when start == 0, returns logits when end == L."""

    def __init__(self, model_dir: str | pathlib.Path, *, layers: tuple[int, int] | None = None,
                 dtype: str = "float32", device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM

        self.model_dir = pathlib.Path(model_dir)
        self.config = config = load_config(self.model_dir)
        self.n_total = int(config.num_hidden_layers)
        start, end = layers if layers is not None else (0, self.n_total)
        if not 0 <= start < end <= self.n_total:
            raise ModelLoadError(f"layers: [{start}, {end}) is not a non-empty range within [0, {self.n_total})")
        self.start, self.end = start, end
        self.first, self.last = start == 0, end == self.n_total
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.hidden_size = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        self.context = context_length(config)
        heads = int(config.num_attention_heads)
        self.shape = CacheShape(kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
                                head_dim=int(getattr(config, "head_dim", None) or self.hidden_size // heads))
        config._attn_implementation = "sdpa"
        with torch.device("meta"):
            full = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]  # untyped upstream
        base = getattr(full, "model", None)
        if base is None or not all(hasattr(base, n) for n in ("embed_tokens", "layers", "norm", "rotary_emb")):
            raise ModelLoadError(f"{self.model_dir}: unexpected module layout for {type(full).__name__}")
        self.layers = nn.ModuleList(list(base.layers)[start:end])
        self.embed_tokens: nn.Module | None = base.embed_tokens if self.first else None
        self.norm: nn.Module | None = base.norm if self.last else None
        self.lm_head: nn.Module | None = full.lm_head if self.last else None
        self._load_weights()
        self.rotary = type(base.rotary_emb)(config=config).to(self.device)  # built off meta: real inv_freq
        params = inspect.signature(type(self.layers[0]).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        del full, base

    def _load_weights(self) -> None:
        from safetensors import safe_open

        files = _weight_files(self.model_dir)
        wanted: dict[str, list[tuple[nn.Module, str]]] = {}
        for i, layer in enumerate(self.layers):
            for name, _ in layer.named_parameters():
                wanted[f"model.layers.{self.start + i}.{name}"] = [(layer, name)]
        embed_key = "model.embed_tokens.weight"
        if self.embed_tokens is not None:
            wanted[embed_key] = [(self.embed_tokens, "weight")]
        if self.norm is not None and self.lm_head is not None:
            wanted["model.norm.weight"] = [(self.norm, "weight")]
            head_key = "lm_head.weight"
            if head_key not in files and getattr(self.config, "tie_word_embeddings", False):
                head_key = embed_key  # tied: the head reads the embedding matrix
            wanted.setdefault(head_key, []).append((self.lm_head, "weight"))
        by_file: dict[pathlib.Path, list[str]] = {}
        for key in wanted:
            if key not in files:
                raise ModelLoadError(f"{self.model_dir}: tensor {key} missing from the checkpoint")
            by_file.setdefault(files[key], []).append(key)
        states: dict[int, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
        for path, keys in by_file.items():
            with safe_open(str(path), framework="pt", device=str(self.device)) as f:
                for key in keys:
                    tensor = f.get_tensor(key).to(self.dtype)
                    for module, name in wanted[key]:
                        states.setdefault(id(module), (module, {}))[1][name] = tensor
        for module, state in states.values():
            try:
                module.load_state_dict(state, strict=True, assign=True)
            except RuntimeError as e:
                raise ModelLoadError(f"{self.model_dir}: weights do not fit the config ({e})") from None
        for m in (*self.layers, self.embed_tokens, self.norm, self.lm_head):
            if m is not None:
                m.eval()
                m.requires_grad_(False)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights this range holds."""
        mods = [m for m in (*self.layers, self.embed_tokens, self.norm, self.lm_head) if m is not None]
        seen: set[int] = set()
        total = 0
        for m in mods:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel() * p.element_size()
        return total

    def new_cache(self, slots: int, max_len: int | None = None) -> SlotKVCache:
        """A KV cache for this range's layers."""
        return SlotKVCache(first_layer=self.start, n_layers=self.end - self.start, slots=slots,
                           max_len=max_len or self.context, shape=self.shape, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def forward(self, cache: SlotKVCache, slots: list[int], starts: list[int], x: torch.Tensor) -> torch.Tensor:
        """Run rows `slots` (row b continues at position starts[b]) through this range and commit the cache.

        x is token ids [B, T] on the first range, else hidden states [B, T, hidden]. Returns hidden states
        [B, T, hidden], or on the last range the float32 logits of each row's last position [B, vocab].
        """
        n_new = int(x.shape[1])
        view = cache.view(slots, starts, n_new)
        h = self.embed_tokens(x) if self.embed_tokens is not None else x.to(self.dtype)
        steps = torch.arange(n_new, device=self.device)
        pos = torch.tensor(starts, dtype=torch.long, device=self.device)[:, None] + steps[None, :]
        keys = torch.arange(view.kv_len, device=self.device)
        mask = (keys[None, None, :] <= pos[:, :, None]).unsqueeze(1)  # [B, 1, T, kv_len]: own prefix only
        cos_sin = self.rotary(h, pos)
        kw = {self._cache_kw: view}
        for layer in self.layers:
            out = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin, use_cache=True, **kw)
            h = out[0] if isinstance(out, tuple) else out
        cache.commit(view)
        if self.norm is None or self.lm_head is None:
            return h
        logits: torch.Tensor = self.lm_head(self.norm(h[:, -1:, :]))[:, 0].float()
        return logits
