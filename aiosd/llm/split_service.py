"""Split models behind the OpenAI endpoint: vDAGs whose record carries `controller.initSettings.llm`.

`model` = the vDAG's name (or its uri). The node answering the request is the entry: it tokenizes with
the checkpoint's tokenizer (loaded once per model path, from the path in the vDAG record), runs the
generation over the vDAG (split_entry.SplitEntry) and detokenizes. Requests are OpenAI task data
(oai.chat_task / completion_task), validated with the LLM SDK's own checks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiosd.llm.oai import OpenAIError
from aiosd.llm.split_entry import SplitEntry
from aiosd.vdag.service import VdagService
from sdk.llm.errors import InvalidRequest, ModelLoadError

SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos")
DEFAULT_MAX_TOKENS = 64
MAX_TOKENIZERS = 8


class SplitModels:
    """Generations of split models at this entry node (service.LlmService finds the models)."""

    def __init__(self, vdag: VdagService) -> None:
        self.vdag = vdag
        self.entry = SplitEntry(lambda uri, data, files, session: vdag.flow.infer(uri, data, files, session,
                                                                                   None, False))
        self._tokenizers: dict[str, tuple[Any, frozenset[int]]] = {}
        self._lock = asyncio.Lock()

    async def _tokenizer(self, path: str) -> tuple[Any, frozenset[int]]:
        async with self._lock:
            got = self._tokenizers.get(path)
            if got is None:
                got = await asyncio.to_thread(_load, path)
                if len(self._tokenizers) >= MAX_TOKENIZERS:
                    self._tokenizers.pop(next(iter(self._tokenizers)))
                self._tokenizers[path] = got
            return got

    async def run(self, uri: str, info: dict[str, Any], data: dict[str, Any],
                  on_text: Callable[[str], Awaitable[None]] | None = None) -> dict[str, Any]:
        """One OpenAI request's generation on the split model; the LLM block's answer shape."""
        from sdk.llm.engine import encode_messages, encode_text
        from sdk.llm.params import messages_from_obj, prompt_from_obj, sampling_from_obj

        try:
            tok, eos = await self._tokenizer(str(info["model_path"]))
        except ModelLoadError as e:
            raise OpenAIError(503, f"split model {uri}: {e}", "model", "model_unavailable", "api_error") from None
        context = int(info.get("max_context") or 2048)
        try:
            params = sampling_from_obj({k: data[k] for k in SAMPLING_KEYS if k in data},
                                       max_tokens_limit=context - 1, default_max_tokens=DEFAULT_MAX_TOKENS)
            if "messages" in data:
                msgs = messages_from_obj(data["messages"])
                ids = await asyncio.to_thread(encode_messages, tok, msgs)
            else:
                ids = await asyncio.to_thread(encode_text, tok, prompt_from_obj(data.get("prompt")))
        except InvalidRequest as e:
            raise OpenAIError(400, str(e), e.field.split("[", 1)[0], "invalid_value") from None
        return await self.entry.generate(uri, ids, params, tok, eos, context, on_text)


def _load(path: str) -> tuple[Any, frozenset[int]]:
    from sdk.llm.engine import eos_ids_of, load_tokenizer

    tok = load_tokenizer(path)
    try:
        raw = json.loads((Path(path) / "config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError):
        raw = None
    return tok, eos_ids_of(raw, tok)


__all__ = ["SplitModels"]
