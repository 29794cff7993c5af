"""LLMBlock: a block class that serves a checkpoint over the normal block SDK packets (`Block(LLMBlock).run()`).

Task `data` (JSON), one of:
    {"prompt": str, ...sampling}                       completion
    {"messages": [{"role", "content"}...], ...sampling} chat (the tokenizer's chat template)
    {"message": str, "session_id"?: str}               AIOS chat convention: the instance keeps the history
    {"inputs": [one of the above, ...]}                 a batch: all items decode together
sampling = max_tokens, temperature, top_p, top_k, seed, stop; "session_id" keeps the KV cache for the next turn.
Output: {"text", "finish_reason", "usage": {prompt_tokens, completion_tokens, total_tokens}, "token_ids",
"model"} (+ "reply" for "message"). Bad input raises InvalidRequest / ContextTooLong (the task answers 422
naming the field, type = the error class); a full queue raises OverCapacity. `stream()` is for in-process
callers such as an HTTP endpoint.

Settings: blockInitData.model_path (checkpoint directory); initSettings dtype, device ("auto" = the
block's first GPU if it has one), max_batch, max_queue, max_context, threads (torch CPU threads),
max_tokens_limit, default_max_tokens, request_timeout_s; parameters = default sampling (live with setParameters).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sdk.llm.aios import TransformersUtils
from sdk.llm.errors import ContextTooLong, InvalidRequest
from sdk.llm.generation import Completion, Delta, Generation
from sdk.llm.params import Message, messages_from_obj, prompt_from_obj, sampling_from_obj
from sdk.llm.stats import LLMMetrics
from sdk.packet import OnDataResult, PreProcessResult

log = logging.getLogger(__name__)

SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos")
# A batch of items shares one packet; more than the engine can hold at once only queues inside one task.
MAX_BATCH_ITEMS = 64


@dataclass(frozen=True, slots=True)
class LlmTask:
    """One validated request, ready for the engine."""

    prompt_ids: list[int]
    params: Any
    session_id: str | None
    chat_message: str | None = None  # AIOS "message" mode: append the reply to this session's history
    field: str = "prompt"


def _device(settings: dict[str, Any], gpus: list[Any]) -> str:
    dev = settings.get("device", "auto")
    if dev != "auto":
        return str(dev)
    import torch

    return "cuda:0" if gpus and torch.cuda.is_available() else "cpu"  # CUDA_VISIBLE_DEVICES = the block's GPUs


class LLMBlock:
    """Serves generate / chat for one checkpoint; AIOS block contract (on_preprocess, on_data, ...)."""

    def __init__(self, context: Any) -> None:
        self.context = context
        init = {**context.block_init_parameters, **context.block_init_data}
        settings = dict(context.block_init_settings)
        path = init.get("model_path") or os.environ.get("AIOSD_LLM_MODEL_PATH")
        if not isinstance(path, str) or not path:
            raise InvalidRequest("blockInitData.model_path", "must name a checkpoint directory")
        device = _device(settings, list(context.allocation_info.gpus))
        dtype = str(settings.get("dtype", "float32" if device == "cpu" else "bfloat16"))
        opts = {k: settings[k] for k in ("max_batch", "max_queue", "max_context", "threads") if k in settings}
        self.utils = TransformersUtils(path, device=device, dtype=dtype, generation_config={},
                                       engine_options=opts)
        self.utils.load_model()
        self.engine = self.utils.loaded_engine()
        self.model = str(init.get("model_name") or os.path.basename(os.path.normpath(path)))
        self.max_tokens_limit = int(settings.get("max_tokens_limit", self.engine.context - 1))
        self.default_max_tokens = int(settings.get("default_max_tokens", 64))
        self.timeout_s = float(settings.get("request_timeout_s", 300.0))
        self.defaults: dict[str, Any] = {}
        self.defaults = self._validated_defaults(dict(context.block_init_parameters))
        self.llm_metrics = LLMMetrics(context.metrics)
        log.info("llm block loaded", extra={"model": self.model, "device": device, "dtype": dtype,
                                            "context": self.engine.context})

    def _validated_defaults(self, params: dict[str, Any]) -> dict[str, Any]:
        chosen = {k: v for k, v in params.items() if k in SAMPLING_KEYS}
        sampling_from_obj(chosen, max_tokens_limit=self.max_tokens_limit, path="parameters.")
        return {**self.defaults, **chosen}

    # -- requests -----------------------------------------------------------------------------------
    def parse(self, obj: Any, path: str = "data.", packet_session: str = "") -> LlmTask:
        """Validate one request object.

        Raises:
            InvalidRequest / ContextTooLong: naming the field.
        """
        if not isinstance(obj, dict):
            raise InvalidRequest(path.rstrip("."), "must be a JSON object")
        params = sampling_from_obj({**self.defaults, **{k: obj[k] for k in SAMPLING_KEYS if k in obj}},
                                   max_tokens_limit=self.max_tokens_limit, path=path,
                                   default_max_tokens=self.default_max_tokens)
        session = obj.get("session_id")
        if session is not None and (not isinstance(session, str) or not 0 < len(session) <= 256):
            raise InvalidRequest(f"{path}session_id", "must be a string of 1..256 characters")
        if "messages" in obj:
            ids = self.engine.encode_chat(messages_from_obj(obj["messages"], f"{path}messages"))
            return self._fit(LlmTask(ids, params, session, field=f"{path}messages"))
        if "message" in obj:
            text = prompt_from_obj(obj["message"], f"{path}message")
            sid = session or packet_session or "default"
            # the turn joins the history only once answered: a refused request leaves no dangling turn
            history = [*self.utils.chat_history(sid), Message("user", text)]
            return self._fit(LlmTask(self.engine.encode_chat(history), params, sid, chat_message=text,
                                     field=f"{path}message"))
        if "prompt" in obj:
            ids = self.engine.encode(prompt_from_obj(obj["prompt"], f"{path}prompt"))
            return self._fit(LlmTask(ids, params, session, field=f"{path}prompt"))
        raise InvalidRequest(path.rstrip("."), "needs one of prompt, messages, message or inputs")

    def _fit(self, task: LlmTask) -> LlmTask:
        if len(task.prompt_ids) >= self.engine.context:
            raise ContextTooLong(task.field, len(task.prompt_ids), self.engine.context)
        return task

    def submit(self, task: LlmTask, notify: Callable[[], None] | None = None) -> Generation:
        """Queue a validated task (raises OverCapacity when the queue is full); see aio.stream_events."""
        return self.engine.submit(task.prompt_ids, task.params, session_id=task.session_id, notify=notify,
                                  field_name=task.field)

    def stream(self, obj: Any) -> Iterator[Delta]:
        """Validate, queue and yield text deltas (in-process callers); the handle's `final` holds the end."""
        handle = self.submit(self.parse(obj))
        try:
            yield from handle.stream(self.timeout_s)
        finally:
            handle.cancel()  # a consumer that stops early frees the slot

    def _answer(self, task: LlmTask, done: Completion) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": done.text, "finish_reason": done.finish_reason, "token_ids": done.token_ids, "model": self.model,
            "usage": {"prompt_tokens": done.usage.prompt_tokens, "completion_tokens": done.usage.completion_tokens,
                      "total_tokens": done.usage.total_tokens},
        }
        if task.chat_message is not None and task.session_id is not None:
            if not self.utils.has_chat_session(task.session_id):
                self.utils.create_chat_session(task.session_id)
            self.utils.add_message_to_chat(task.session_id, task.chat_message, role="user")
            self.utils.add_message_to_chat(task.session_id, done.text, role="assistant")
            out["reply"] = done.text
        return out

    # -- AIOS callbacks -----------------------------------------------------------------------------
    def on_preprocess(self, packet: Any) -> tuple[bool, Any]:
        try:
            data = json.loads(packet.data) if packet.data else None
        except ValueError as e:
            raise InvalidRequest("data", f"not JSON ({e})") from None
        if isinstance(data, dict) and "inputs" in data:
            items = data["inputs"]
            if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH_ITEMS:
                raise InvalidRequest("data.inputs", f"must be a list of 1..{MAX_BATCH_ITEMS} requests")
            tasks = [self.parse(it, f"data.inputs[{i}].", packet.session_id) for i, it in enumerate(items)]
        else:
            tasks = [self.parse(data, "data.", packet.session_id)]
        # submit them all now so the items of one packet decode together; on_data waits for each
        handles: list[Generation] = []
        try:
            for t in tasks:
                handles.append(self.submit(t))
        except Exception:
            for h in handles:  # e.g. OverCapacity on item 3: items 1-2 must not run for nobody
                h.cancel()
            raise
        return True, [PreProcessResult(packet=packet, extra_data=(t, h)) for t, h in zip(tasks, handles)]

    def on_data(self, entry: Any) -> tuple[bool, Any]:
        task, handle = entry.extra_data
        try:
            done = handle.result(self.timeout_s)
        finally:
            handle.cancel()
            self.publish_metrics()
        return True, OnDataResult(output=self._answer(task, done))

    def on_update(self, params: dict[str, Any]) -> tuple[bool, Any]:
        try:
            self.defaults = self._validated_defaults(params)
        except InvalidRequest as e:
            return False, str(e)
        return True, params

    def publish_metrics(self) -> dict[str, Any]:
        """Push the engine's statistics into the block's metrics (Prometheus) and return them."""
        snap = self.engine.metrics()
        ttft, tpot = self.engine.stats.drain_observations()
        self.llm_metrics.publish(snap, ttft, tpot)
        return snap

    def health(self) -> dict[str, Any]:
        snap = self.publish_metrics()
        return {"status": "healthy", "model": self.model, "context": self.engine.context,
                "running": snap["running"], "queue_length": snap["queue_length"]}

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "reset":
            for sid in self.utils.chat_sessions():
                self.utils.remove_chat_session(sid)
            return {"status": "success"}
        if action == "remove_session":
            target = data.get("session_id") if isinstance(data, dict) else None
            if not isinstance(target, str):
                return {"status": "error", "message": "mgmt_data.session_id: must be a string"}
            self.utils.remove_chat_session(target)
            return {"status": "success"}
        if action == "metrics":
            return {"status": "success", "metrics": self.publish_metrics()}
        if action == "info":
            return {"status": "success", "info": self.utils.get_device_info()}
        return {"status": "error", "message": f"unknown action {action!r} (reset, remove_session, metrics, info)"}

    def get_muxer(self) -> None:
        return None

    def close(self) -> None:
        """Stop the engine."""
        self.engine.close()
