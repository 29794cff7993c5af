"""The entry of a split model served over its vDAG: one task per token through the stage chain.

The entry keeps each session's token history (`fed`: the positions every stage holds; `pending`: the
tokens to feed next). A step sends `pending` at position len(fed) through the vDAG; the tail samples
and answers the token. When a step fails (a stage's instance died and its replacement has no cache:
CacheMiss, or no instance answered), the entry replays the whole history from position 0 through the
chain, so every stage rebuilds its KV cache (Petals), and the generation continues: greedy (and seeded)
tokens equal an undisturbed run's. Replays are retried for at most `replay_window_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from aiosd.llm.oai import OpenAIError
from aiosd.vdag.errors import VdagError
from sdk.llm import tensor_wire
from sdk.llm.generation import TextAssembler
from sdk.llm.params import SamplingParams

log = logging.getLogger(__name__)

# (vdag uri, task data, files, session) → the vDAG answer {"outputs": [...], ...}; raises VdagError
InferFn = Callable[[str, dict[str, Any], list[dict[str, Any]], str], Awaitable[dict[str, Any]]]
REFUSED = ("InvalidRequest", "TensorWireError")  # the input is wrong: a replay would fail the same way


@dataclass(slots=True)
class SplitRun:
    """One generation's state at the entry."""

    session: str
    params: SamplingParams
    fed: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    replays: int = 0
    stalled_s: float = 0.0  # the longest step that needed a replay (the failed try included)


def _file(ids: list[int]) -> dict[str, Any]:
    f = tensor_wire.to_file(torch.tensor(ids, dtype=torch.long), "tokens")
    return {"metadata": f.metadata, "file_data": f.file_data}


class SplitEntry:
    """Runs generations over a split model's vDAG with history-replay failover."""

    def __init__(self, infer: InferFn, *, replay_window_s: float = 20.0, retry_every_s: float = 0.25) -> None:
        self.infer = infer
        self.replay_window_s = replay_window_s
        self.retry_every_s = retry_every_s
        self.replays_total = 0
        self._bg: set[asyncio.Task[None]] = set()

    def _sample(self, p: SamplingParams) -> dict[str, Any]:
        return {"temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k, "seed": p.seed or 0}

    async def _send(self, uri: str, run: SplitRun, start: int, ids: list[int]) -> int:
        data = {"op": "forward", "session_id": run.session, "start": start, "sample": self._sample(run.params)}
        out = await self.infer(uri, data, [_file(ids)], run.session)
        outputs = out.get("outputs") or []
        tok = outputs[0].get("token") if outputs and isinstance(outputs[0], dict) else None
        if not isinstance(tok, int):
            raise OpenAIError(502, f"split model {uri}: the tail answered no token", None, "upstream_error",
                              "api_error")
        return tok

    async def step(self, uri: str, run: SplitRun) -> int:
        """Feed the pending tokens, return the next token; replays the history when a stage lost it."""
        t0 = time.monotonic()
        try:
            return await self._send(uri, run, len(run.fed), run.pending)
        except VdagError as e:
            if any(r in str(e) for r in REFUSED):
                raise _refused(e) from None
            first = e
        deadline = time.monotonic() + self.replay_window_s
        attempts = 0
        while True:  # bounded: by the window and the attempt count
            attempts += 1
            run.replays += 1
            self.replays_total += 1
            log.info("split model: replaying the history", extra={"vdag": uri, "session": run.session,
                                                                   "positions": len(run.fed), "error": str(first)})
            try:
                tok = await self._send(uri, run, 0, run.fed + run.pending)
                run.stalled_s = max(run.stalled_s, time.monotonic() - t0)
                return tok
            except VdagError as e:
                if any(r in str(e) for r in REFUSED):
                    raise _refused(e) from None
                first = e
            if time.monotonic() >= deadline or attempts >= 200:
                raise OpenAIError(503, f"split model {uri}: a stage stayed unavailable for "
                                  f"{self.replay_window_s:g}s ({first})", None, "stage_unavailable", "api_error")
            await asyncio.sleep(self.retry_every_s)

    async def generate(self, uri: str, prompt_ids: list[int], params: SamplingParams, tokenizer: Any,
                       eos_ids: frozenset[int], context: int,
                       on_text: Callable[[str], Awaitable[None]] | None = None) -> dict[str, Any]:
        """Generate up to params.max_tokens tokens; the LLM block's answer shape plus `replays`."""
        if not prompt_ids:
            raise OpenAIError(400, "the prompt is empty", "prompt", "invalid_value")
        if len(prompt_ids) >= context:
            raise OpenAIError(400, f"the prompt has {len(prompt_ids)} tokens; this model's context is {context} "
                              "tokens", "messages", "context_length_exceeded")
        run = SplitRun(session=uuid.uuid4().hex, params=params, pending=list(prompt_ids))
        text = TextAssembler(tokenizer, params.stop)
        pieces: list[str] = []
        finish = "length"
        stop_hit = False
        try:
            while len(run.tokens) < params.max_tokens:
                tok = await self.step(uri, run)
                run.fed.extend(run.pending)
                run.pending = [tok]
                run.tokens.append(tok)
                if tok in eos_ids and not params.ignore_eos:
                    finish = "stop"
                    break
                piece, stopped = text.add(tok)
                if piece:
                    pieces.append(piece)
                    if on_text is not None:
                        await on_text(piece)
                if stopped:
                    finish, stop_hit = "stop", True
                    break
                if len(run.fed) + 1 >= context:
                    break
        finally:
            task = asyncio.get_running_loop().create_task(self._drop(uri, run.session))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
        if not stop_hit:
            tail = text.flush()
            if tail:
                pieces.append(tail)
                if on_text is not None:
                    await on_text(tail)
        n = len(run.tokens)
        return {"text": "".join(pieces), "finish_reason": finish, "token_ids": run.tokens, "model": uri,
                "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": n,
                          "total_tokens": len(prompt_ids) + n},
                "replays": run.replays, "failover_pause_s": round(run.stalled_s, 3)}

    async def _drop(self, uri: str, session: str) -> None:
        """Free the session's caches along the chain (best effort: LRU eviction frees them otherwise)."""
        try:
            await self.infer(uri, {"op": "drop", "session_id": session, "start": 0}, [], session)
        except (VdagError, OpenAIError) as e:
            log.debug("split model: drop failed", extra={"vdag": uri, "error": str(e)})


def _refused(e: VdagError) -> OpenAIError:
    if "context" in str(e):
        return OpenAIError(400, str(e), "messages", "context_length_exceeded")
    return OpenAIError(400, str(e), None, "invalid_value")


__all__ = ["InferFn", "SplitEntry", "SplitRun"]
