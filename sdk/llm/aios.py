"""AIOS's LLM SDK "method 1" surface (`aios_transformers.TransformersUtils`), on top of LLMEngine.

Same names and call shapes as AIOS, without its bugs (reference/aios-llm.md §2): generate returns only
the completion, chat uses the tokenizer's chat template and stores only the reply, TTFT is measured at the
first token, and sessions are bounded and locked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sdk.llm.engine import LLMEngine
from sdk.llm.errors import InvalidRequest
from sdk.llm.params import Message, SamplingParams, sampling_from_obj

# Chat histories live in instance memory; the cap bounds what callers can make us hold.
MAX_CHAT_SESSIONS = 1024
# AIOS's defaults for generation_config, mapped to our names (max_new_tokens -> max_tokens).
AIOS_DEFAULTS = {"max_tokens": 100, "temperature": 1.0, "top_k": 50, "top_p": 0.95}


def _params(config: dict[str, Any], overrides: dict[str, Any], limit: int) -> SamplingParams:
    merged = {**config, **overrides}
    if "max_new_tokens" in merged:
        merged["max_tokens"] = merged.pop("max_new_tokens")
    if merged.pop("do_sample", True) is False:
        merged["temperature"] = 0.0
    return sampling_from_obj(merged, max_tokens_limit=limit)


class TransformersUtils:
    """`TransformersUtils(model_name=PATH, device=None, generation_config={})` then load_model()."""

    def __init__(self, model_name: str, device: str | None = None, metrics: Any = None,
                 tensor_parallel: bool = False, quantize: bool = False,
                 generation_config: dict[str, Any] | None = None, dtype: str = "float32",
                 engine_options: dict[str, Any] | None = None) -> None:
        self.model_name = model_name
        self.device = device or "cpu"
        self.metrics = metrics
        self.tensor_parallel = tensor_parallel
        self.dtype = dtype
        self.generation_config: dict[str, Any] = dict(generation_config or AIOS_DEFAULTS)
        self.engine_options = dict(engine_options or {})
        self.engine: LLMEngine | None = None
        self._chats: OrderedDict[str, list[Message]] = OrderedDict()
        self._lock = threading.Lock()

    def load_model(self, extra_args: dict[str, Any] | None = None) -> None:
        """Load the checkpoint and start the engine (extra_args go to LLMEngine)."""
        opts = {**self.engine_options, **(extra_args or {})}
        self.engine = LLMEngine(self.model_name, dtype=self.dtype, device=self.device, **opts)

    def loaded_engine(self) -> LLMEngine:
        """The engine (raises RuntimeError before load_model())."""
        if self.engine is None:
            raise RuntimeError("call load_model() first")
        return self.engine

    def set_generation_config(self, **kw: Any) -> None:
        """Update the default sampling settings."""
        _params(self.generation_config, kw, self.loaded_engine().context - 1)  # validate before storing
        self.generation_config.update(kw)

    def generate(self, prompt: str, **kw: Any) -> str:
        """The completion text (not the prompt)."""
        e = self.loaded_engine()
        return e.generate(prompt, _params(self.generation_config, kw, e.context - 1)).text

    def generate_tokens(self, prompt: str, **kw: Any) -> list[int]:
        """The generated token ids."""
        e = self.loaded_engine()
        return e.generate(prompt, _params(self.generation_config, kw, e.context - 1)).token_ids

    def tokenize(self, text: str) -> list[int]:
        """Token ids of text."""
        return self.loaded_engine().encode(text)

    def decode(self, ids: list[int]) -> str:
        """Text of token ids."""
        return str(self.loaded_engine().tokenizer.decode(ids, skip_special_tokens=True))

    # -- chat sessions (AIOS names) -----------------------------------------------------------------
    def create_chat_session(self, session_id: str, system_message: str = "") -> None:
        """Start a chat history (replacing one of the same id)."""
        with self._lock:
            self._chats[session_id] = [Message("system", system_message)] if system_message else []
            while len(self._chats) > MAX_CHAT_SESSIONS:
                old, _ = self._chats.popitem(last=False)
                if self.engine is not None:
                    self.engine.drop_session(old)

    def has_chat_session(self, session_id: str) -> bool:
        """True when the session exists."""
        with self._lock:
            return session_id in self._chats

    def chat_history(self, session_id: str) -> list[Message]:
        """A copy of a session's turns ([] when unknown)."""
        with self._lock:
            return list(self._chats.get(session_id) or [])

    def chat_sessions(self) -> list[str]:
        """Ids of the chat sessions held."""
        with self._lock:
            return list(self._chats)

    def add_message_to_chat(self, session_id: str, message: str, role: str = "user") -> None:
        """Append a turn (raises InvalidRequest for an unknown session)."""
        with self._lock:
            if session_id not in self._chats:
                raise InvalidRequest("session_id", f"no chat session {session_id!r}")
            self._chats[session_id].append(Message(role, message))
            self._chats.move_to_end(session_id)

    def run_chat_inference(self, session_id: str, **kw: Any) -> str:
        """Answer the session's history; the reply is appended as the assistant turn."""
        e = self.loaded_engine()
        with self._lock:
            history = list(self._chats.get(session_id) or [])
        if not history:
            raise InvalidRequest("session_id", f"chat session {session_id!r} has no messages")
        reply = e.chat(history, _params(self.generation_config, kw, e.context - 1), session_id=session_id).text
        with self._lock:
            if session_id in self._chats:
                self._chats[session_id].append(Message("assistant", reply))
        return reply

    def remove_chat_session(self, session_id: str) -> None:
        """Forget a chat and its KV cache."""
        with self._lock:
            self._chats.pop(session_id, None)
        if self.engine is not None:
            self.engine.drop_session(session_id)

    def get_device_info(self) -> dict[str, Any]:
        """{device, cuda_available, num_gpus, tensor_parallel, model} as in AIOS."""
        import torch

        return {"device": self.device, "cuda_available": torch.cuda.is_available(),
                "num_gpus": torch.cuda.device_count(), "tensor_parallel": self.tensor_parallel,
                "model": self.model_name}
