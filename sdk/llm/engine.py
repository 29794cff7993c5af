"""LLMEngine: a causal LM with continuous batching over KV-cache slots, driven by one engine thread.

Each step admits waiting requests into free slots (prefill, one forward per new request, reusing the
session's cached prefix), then decodes every running request together in one forward of batch B
(per-row positions and masks over the slot cache, see kvcache.py). A finished or cancelled request
leaves its slot at once; a session's slot keeps its KV cache for the next turn until it is evicted (LRU)
for a new session. Admission is bounded: past `max_queue` waiting requests, submit raises OverCapacity.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from sdk.llm.decoder import DecoderStack
from sdk.llm.errors import ContextTooLong, EngineStopped, InvalidRequest, ModelLoadError, OverCapacity
from sdk.llm.generation import Completion, Delta, FinishReason, Generation, TextAssembler, Usage, failed
from sdk.llm.params import Message, SamplingParams
from sdk.llm.sampling import make_generator, sample_rows
from sdk.llm.stats import EngineStats

log = logging.getLogger(__name__)

# At most this many new requests are prefilled per step, so decoding sessions wait for at most a few
# prefills between two of their tokens (vLLM bounds prefill per step for the same reason).
PREFILL_PER_STEP = 4


@dataclass(eq=False, slots=True)
class _Request:
    id: int
    prompt: list[int]
    params: SamplingParams
    handle: Generation
    text: TextAssembler
    session_id: str | None
    submitted: float
    generator: torch.Generator | None = None
    slot: int = -1
    tokens: list[int] = field(default_factory=list)
    first_at: float = 0.0
    finish: FinishReason | None = None
    stop_hit: bool = False  # a stop string ended the text: nothing held back is emitted


def load_tokenizer(model_dir: str) -> Any:
    """The checkpoint's tokenizer (local files only)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{model_dir}: tokenizer cannot be loaded ({e})") from None


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a completion prompt (the tokenizer's own special tokens included)."""
    return list(tokenizer(text)["input_ids"])


def encode_messages(tokenizer: Any, messages: list[Message]) -> list[int]:
    """Token ids of a chat: the tokenizer's chat template, or `role: content` lines without one."""
    turns = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return encode_text(tokenizer, "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:")


def eos_ids_of(raw: Any, tokenizer: Any) -> frozenset[int]:
    """The end-of-sequence ids of a checkpoint: its config's `eos_token_id` (`raw`) and its tokenizer's."""
    ids: set[int] = set()
    if isinstance(raw, int):
        ids.add(raw)
    elif isinstance(raw, list | tuple):
        ids.update(int(v) for v in raw if isinstance(v, int))
    tok_eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(tok_eos, int):
        ids.add(tok_eos)
    return frozenset(ids)


class LLMEngine:
    """generate / stream / chat over one checkpoint; thread-safe; `close()` when done."""

    def __init__(self, model_dir: str, *, dtype: str = "float32", device: str = "cpu", max_batch: int = 8,
                 max_queue: int = 64, max_context: int | None = None, default_max_tokens: int = 64,
                 threads: int | None = None, clock: Callable[[], float] = time.monotonic,
                 start: bool = True) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError("max_batch must be >= 1 and max_queue >= 0")
        if threads is not None:  # process-wide: a block process serves one model
            torch.set_num_threads(threads)
        self.model_dir = str(model_dir)
        self.stack = DecoderStack(model_dir, dtype=dtype, device=device)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.context = min(self.stack.context, max_context or self.stack.context)
        self.cache = self.stack.new_cache(max_batch, self.context)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.default_max_tokens = default_max_tokens
        self.eos_ids = self._eos_ids()
        self.stats = EngineStats()
        self._clock = clock
        self._rng = random.Random()
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._running: dict[int, _Request] = {}  # slot -> request
        self._idle: OrderedDict[str, int] = OrderedDict()  # session -> slot holding its cache (LRU order)
        self._owner: list[str | None] = [None] * max_batch
        self._slot_tokens: list[list[int]] = [[] for _ in range(max_batch)]
        self._next_id = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Start the engine thread (idempotent; `start=False` at construction leaves stepping to the caller)."""
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
                self._thread.start()

    def _eos_ids(self) -> frozenset[int]:
        return eos_ids_of(getattr(self.stack.config, "eos_token_id", None), self.tokenizer)

    # -- prompts ------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of a completion prompt (the tokenizer's own special tokens included)."""
        return encode_text(self.tokenizer, text)

    def encode_chat(self, messages: list[Message]) -> list[int]:
        """Token ids of a chat: the tokenizer's chat template, or `role: content` lines without one."""
        return encode_messages(self.tokenizer, messages)

    # -- requests -----------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, *, session_id: str | None = None,
               notify: Callable[[], None] | None = None, field_name: str = "prompt") -> Generation:
        """Queue a request; its handle. `session_id` keeps the KV cache for the session's next turn.

        Raises:
            InvalidRequest / ContextTooLong: empty prompt, a token id out of the vocabulary, or no room for one
                new token. OverCapacity: the waiting queue is full. EngineStopped: closed.
        """
        if not prompt_ids:
            raise InvalidRequest(field_name, "is empty after tokenization")
        if len(prompt_ids) >= self.context:
            raise ContextTooLong(field_name, len(prompt_ids), self.context)
        if any(not 0 <= t < self.stack.vocab_size for t in prompt_ids):
            raise InvalidRequest(field_name, f"token ids must be in 0..{self.stack.vocab_size - 1}")
        with self._cond:
            if self._closed:
                raise EngineStopped("engine is closed")
            self._drop_cancelled_waits()  # at once, not at the next step: a caller that gave up frees its place
            if len(self._running) + len(self._waiting) >= self.max_batch + self.max_queue:
                self.stats.rejected_total += 1
                raise OverCapacity(len(self._running), len(self._waiting))
            self._next_id += 1
            handle = Generation(self._next_id, notify)
            seed = params.seed if params.seed is not None else self._rng.getrandbits(63)
            req = _Request(id=self._next_id, prompt=list(prompt_ids), params=params, handle=handle,
                           text=TextAssembler(self.tokenizer, params.stop), session_id=session_id,
                           submitted=self._clock(),
                           generator=None if params.greedy else make_generator(seed, self.stack.device))
            self._waiting.append(req)
            self.stats.prompts_total += 1
            self.stats.prompt_tokens_total += len(prompt_ids)
            self._cond.notify()
        return handle

    def generate(self, prompt: str, params: SamplingParams | None = None, *,
                 session_id: str | None = None, timeout: float | None = 120.0) -> Completion:
        """Complete a text prompt (blocking)."""
        return self.submit(self.encode(prompt), params or SamplingParams(), session_id=session_id).result(timeout)

    def stream(self, prompt: str, params: SamplingParams | None = None, *,
               session_id: str | None = None, timeout: float | None = 120.0) -> Iterator[Delta]:
        """Complete a text prompt, yielding text deltas as tokens are decoded."""
        yield from self.submit(self.encode(prompt), params or SamplingParams(), session_id=session_id).stream(timeout)

    def chat(self, messages: list[Message], params: SamplingParams | None = None, *,
             session_id: str | None = None, timeout: float | None = 120.0) -> Completion:
        """Answer a chat (blocking); with a session_id the next turn reuses this turn's KV cache."""
        ids = self.encode_chat(messages)
        return self.submit(ids, params or SamplingParams(), session_id=session_id,
                           field_name="messages").result(timeout)

    def drop_session(self, session_id: str) -> bool:
        """Forget an idle session's KV cache (True when it held one)."""
        with self._cond:
            slot = self._idle.pop(session_id, None)
            if slot is None:
                return False
            self._free(slot)
            return True

    # -- slots (under the lock) ---------------------------------------------------------------------
    def _free(self, slot: int) -> None:
        self._owner[slot] = None
        self._slot_tokens[slot] = []
        self.cache.reset(slot, 0)

    def _take_slot(self, req: _Request) -> int | None:
        if req.session_id is not None and req.session_id in self._idle:
            return self._idle.pop(req.session_id)
        busy = set(self._running) | set(self._idle.values())
        free = [s for s in range(self.max_batch) if s not in busy]
        if free:
            return free[0]
        if self._idle:  # evict the least recently used session's cache
            _, slot = self._idle.popitem(last=False)
            self._free(slot)
            return slot
        return None

    def _drop_cancelled_waits(self) -> None:
        """A cancelled wait frees its queue place (called with the lock held)."""
        for req in [r for r in self._waiting if r.handle.cancelled]:
            self._waiting.remove(req)
            self._finish(req, "cancelled")

    def _admit(self) -> list[_Request]:
        admitted: list[_Request] = []
        running_sessions = {r.session_id for r in self._running.values() if r.session_id is not None}
        self._drop_cancelled_waits()
        for req in list(self._waiting):
            if len(admitted) >= PREFILL_PER_STEP:
                break
            if req.session_id is not None and req.session_id in running_sessions:
                continue  # one turn of a session at a time; later turns wait in order
            slot = self._take_slot(req)
            if slot is None:
                break
            self._waiting.remove(req)
            if self._owner[slot] != req.session_id or req.session_id is None:
                self._free(slot)
            self._owner[slot] = req.session_id
            req.slot = slot
            self._running[slot] = req
            if req.session_id is not None:
                running_sessions.add(req.session_id)
            admitted.append(req)
        return admitted

    # -- the step -----------------------------------------------------------------------------------
    def step(self) -> int:
        """One scheduling iteration: admit + prefill new requests, one batched decode; tokens produced."""
        with self._cond:
            new = self._admit()
            new_ids = {r.id for r in new}
            decode = sorted((r for r in self._running.values() if r.id not in new_ids and r.finish is None),
                            key=lambda r: r.slot)
        produced = 0
        for req in new:
            produced += self._guard([req], self._prefill)
        if decode:
            produced += self._guard(decode, self._decode)
        with self._cond:
            for slot, req in list(self._running.items()):
                if req.finish is None and req.handle.cancelled:
                    req.finish = "cancelled"
                if req.finish is not None:
                    del self._running[slot]
                    self._release(req)
        return produced

    def _guard(self, reqs: list[_Request], fn: Callable[[list[_Request]], int]) -> int:
        try:
            return fn(reqs)
        except Exception as e:  # owned unit of work: these requests fail, the engine keeps serving
            log.exception("llm step failed", extra={"requests": [r.id for r in reqs]})
            with self._cond:
                self.stats.errors_total += len(reqs)
            for r in reqs:
                r.finish = "cancelled"
                r.handle.put(failed(e))
                r.session_id = None  # its cache may be half-written: do not keep it
            return 0

    def _prefill(self, reqs: list[_Request]) -> int:
        req = reqs[0]
        cached = self._slot_tokens[req.slot]
        keep = 0
        for a, b in zip(cached, req.prompt[:-1]):  # at least one prompt token is run to get logits
            if a != b:
                break
            keep += 1
        self.cache.reset(req.slot, keep)
        self.stats.reused_tokens_total += keep
        ids = torch.tensor([req.prompt[keep:]], dtype=torch.long, device=self.stack.device)
        logits = self.stack.forward(self.cache, [req.slot], [keep], ids)
        self._slot_tokens[req.slot] = list(req.prompt)
        return self._emit([req], logits)

    def _decode(self, reqs: list[_Request]) -> int:
        last = torch.tensor([[r.tokens[-1]] for r in reqs], dtype=torch.long, device=self.stack.device)
        starts = [self.cache.lengths[r.slot] for r in reqs]
        logits = self.stack.forward(self.cache, [r.slot for r in reqs], starts, last)
        for r in reqs:
            self._slot_tokens[r.slot].append(r.tokens[-1])
        return self._emit(reqs, logits)

    def _emit(self, reqs: list[_Request], logits: torch.Tensor) -> int:
        picks = sample_rows(logits, [r.params for r in reqs], [r.generator for r in reqs])
        now = self._clock()
        for req, tok in zip(reqs, picks):
            if not req.tokens:
                req.first_at = now
                self.stats.first_token(now - req.submitted)
            req.tokens.append(tok)
            if tok in self.eos_ids and not req.params.ignore_eos:
                req.finish = "stop"
                continue
            text, stopped = req.text.add(tok)
            req.handle.put(Delta(text, tok))
            if stopped:
                req.finish, req.stop_hit = "stop", True
            elif len(req.tokens) >= req.params.max_tokens or self.cache.lengths[req.slot] >= self.context:
                req.finish = "length"
            elif req.handle.cancelled:
                req.finish = "cancelled"
        self.stats.tokens(now, len(picks))
        return len(picks)

    def _release(self, req: _Request) -> None:
        """The request left its slot: keep the cache for its session, or free it (under the lock)."""
        if req.session_id is not None and req.finish != "cancelled":
            self._idle[req.session_id] = req.slot
            self._idle.move_to_end(req.session_id)
        else:
            self._free(req.slot)
        self._finish(req, req.finish or "cancelled")

    def _finish(self, req: _Request, reason: FinishReason) -> None:
        if reason == "cancelled":
            self.stats.cancelled_total += 1
        tail = "" if req.stop_hit else req.text.flush()
        if tail:
            req.handle.put(Delta(tail, -1))
        n = len(req.tokens)
        tpot = (self._clock() - req.first_at) / (n - 1) if n > 1 else None
        self.stats.finished(tpot)
        req.handle.put(Completion(text=req.text.text, token_ids=list(req.tokens), finish_reason=reason,
                                  usage=Usage(len(req.prompt), n), ttft_s=req.first_at - req.submitted if n else 0.0,
                                  session_id=req.session_id))

    # -- driver -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    return
            self.step()

    def metrics(self) -> dict[str, Any]:
        """TTFT, TPOT, tokens/s, queue length, running sessions, KV-cache bytes (plain dict)."""
        with self._cond:
            self.stats.gauges = {
                "queue_length": len(self._waiting), "running": len(self._running),
                "sessions_cached": len(self._idle), "kv_cache_bytes": self.cache.used_bytes(),
                "kv_cache_capacity_bytes": self.cache.capacity_bytes, "max_batch": self.max_batch,
                "max_queue": self.max_queue, "context": self.context,
            }
            return self.stats.snapshot(self._clock())

    def close(self) -> None:
        """Stop the engine thread; pending requests fail with EngineStopped (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending = list(self._waiting) + list(self._running.values())
            self._waiting.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for req in pending:
            req.handle.put(failed(EngineStopped("engine closed")))
