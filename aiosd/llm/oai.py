"""OpenAI wire shapes, pure: request bodies checked and turned into LLM block task data, block answers
turned into OpenAI responses and server-sent-event chunks, errors in OpenAI's shape.

No I/O, no clock: the caller passes `now` (unix seconds) and the response id. Every rejection is an
`OpenAIError` naming the parameter (`param`), answered as `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import json
import math
from typing import Any

SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop")
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
MAX_MESSAGES = 1024


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(param: str, why: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {why}", param, "invalid_value")


def _number(body: dict[str, Any], name: str, lo: float, hi: float, integer: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
        raise _bad(name, "must be an integer" if integer else "must be a number")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise _bad(name, f"must be within {lo:g}..{hi:g}")
    return v


def sampling(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields of an OpenAI request as block task fields. Raises OpenAIError (400)."""
    out: dict[str, Any] = {}
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    if mt is not None:
        out["max_tokens"] = _number({"max_tokens": mt}, "max_tokens", 1, 1 << 20, integer=True)
    for name, lo, hi, integer in (("temperature", 0, 2, False), ("top_p", 0, 1, False),
                                  ("top_k", 0, 1 << 20, True), ("seed", 0, (1 << 63) - 1, True)):
        v = _number(body, name, lo, hi, integer)
        if v is not None:
            out[name] = v
    if out.get("top_p") == 0:
        raise _bad("top_p", "must be within (0, 1]")
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
            raise _bad("stop", "must be a non-empty string or a list of at most 4")
        out["stop"] = stops
    n = body.get("n", 1)
    if n != 1:
        raise _bad("n", "only n = 1 is served")
    return out


def _model(body: Any) -> str:
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object", None, "invalid_body")
    m = body.get("model")
    if not isinstance(m, str) or not 0 < len(m) <= 256:
        raise _bad("model", "must be a string naming an LLM block or its component")
    if not isinstance(body.get("stream", False), bool):
        raise _bad("stream", "must be a boolean")
    return m


def _content(c: Any, param: str) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # content parts: only text parts are served
        parts = []
        for i, p in enumerate(c):
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise _bad(f"{param}[{i}]", "only {type: text, text: string} parts are served")
            parts.append(p["text"])
        return "".join(parts)
    raise _bad(param, "must be a string or a list of text parts")


def chat_task(body: Any) -> tuple[str, dict[str, Any]]:
    """(model, block task data) for a /v1/chat/completions body. Raises OpenAIError (400)."""
    model = _model(body)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not 0 < len(msgs) <= MAX_MESSAGES:
        raise _bad("messages", f"must be a list of 1..{MAX_MESSAGES} messages")
    turns = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}]", "must be an object {role, content}")
        role = m.get("role")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role", f"must be one of {', '.join(sorted(ROLES))}")
        turns.append({"role": "system" if role == "developer" else role,
                      "content": _content(m.get("content"), f"messages[{i}].content")})
    return model, {"messages": turns, **sampling(body)}


def completion_task(body: Any) -> tuple[str, dict[str, Any]]:
    """(model, block task data) for a /v1/completions body. Raises OpenAIError (400)."""
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("prompt", "must be a string (one prompt per request)")
    return model, {"prompt": prompt, **sampling(body)}


def block_error(message: str) -> OpenAIError:
    """An LLM block's task error (its type is in the message) in OpenAI's shape."""
    if "OverCapacity" in message:
        return OpenAIError(429, message, None, "over_capacity", "rate_limit_error")
    if "ContextTooLong" in message:
        return OpenAIError(400, message, "messages", "context_length_exceeded")
    if "InvalidRequest" in message:
        field = message.rsplit("data.", 1)[-1].split(":", 1)[0] if "data." in message else None
        return OpenAIError(400, message, field, "invalid_value")
    return OpenAIError(502, message, None, "upstream_error", "api_error")


def _usage(out: dict[str, Any]) -> dict[str, int]:
    u = out.get("usage") or {}
    return {k: int(u.get(k, 0)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _finish(out: dict[str, Any]) -> str:
    return "length" if out.get("finish_reason") == "length" else "stop"


def chat_response(rid: str, model: str, out: dict[str, Any], now: int) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": now, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": str(out.get("text", ""))},
                         "logprobs": None, "finish_reason": _finish(out)}],
            "usage": _usage(out)}


def completion_response(rid: str, model: str, out: dict[str, Any], now: int) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": now, "model": model,
            "choices": [{"index": 0, "text": str(out.get("text", "")), "logprobs": None,
                         "finish_reason": _finish(out)}],
            "usage": _usage(out)}


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def stream_frames(chat: bool, rid: str, model: str, out: dict[str, Any], now: int,
                  include_usage: bool) -> list[bytes]:
    """The SSE frames of a finished answer, OpenAI chunk format: role, content, finish (+ usage), [DONE]."""
    text = str(out.get("text", ""))
    frames = [stream_start(chat, rid, model, now)] if chat else []
    if text:
        frames.append(stream_text(chat, rid, model, now, text))
    return frames + stream_end(chat, rid, model, out, now, include_usage)


def _chunk(chat: bool, rid: str, model: str, now: int, delta: dict[str, Any] | str,
           finish: str | None) -> bytes:
    choice: dict[str, Any] = ({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish} if chat
                              else {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish})
    obj = "chat.completion.chunk" if chat else "text_completion"
    return sse({"id": rid, "object": obj, "created": now, "model": model, "choices": [choice]})


def stream_start(chat: bool, rid: str, model: str, now: int) -> bytes:
    """The first frame of a chat stream (the assistant role); completions have none."""
    return _chunk(chat, rid, model, now, {"role": "assistant", "content": ""}, None)


def stream_text(chat: bool, rid: str, model: str, now: int, text: str) -> bytes:
    """One content frame."""
    return _chunk(chat, rid, model, now, {"content": text} if chat else text, None)


def stream_end(chat: bool, rid: str, model: str, out: dict[str, Any], now: int, include_usage: bool) -> list[bytes]:
    """The finish frame (+ usage), then [DONE]."""
    frames = [_chunk(chat, rid, model, now, {} if chat else "", _finish(out))]
    if include_usage:
        obj = "chat.completion.chunk" if chat else "text_completion"
        frames.append(sse({"id": rid, "object": obj, "created": now, "model": model, "choices": [],
                           "usage": _usage(out)}))
    return [*frames, DONE]


def include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool):
        raise _bad("stream_options", "must be {include_usage: boolean}")
    return bool(opts.get("include_usage", False))


__all__ = ["DONE", "OpenAIError", "block_error", "chat_response", "chat_task", "completion_response",
           "completion_task", "include_usage", "sampling", "sse", "stream_end", "stream_frames", "stream_start",
           "stream_text"]
