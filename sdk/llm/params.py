"""Request validation at the edge: sampling parameters and chat messages, each error naming its field.

Pure Python (no torch): the OpenAI endpoint and the block both call these before anything is queued.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdk.llm.errors import InvalidRequest

# Bounds that keep one request from tying up the engine: 4 stop strings of 256 chars is what OpenAI allows;
# a chat of 1024 turns / 1 MiB of text is far past any context we serve and cheap to check.
MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_MESSAGES = 1024
MAX_TEXT_CHARS = 1 << 20
MAX_SEED = (1 << 63) - 1
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens. temperature 0 = greedy; top_k 0 = off; top_p 1.0 = off; seed None = engine RNG."""

    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep going past the end-of-sequence token (benchmarks, vLLM's flag)

    @property
    def greedy(self) -> bool:
        """True when decoding is argmax (temperature 0)."""
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: str
    content: str


def _int(obj: Mapping[str, Any], key: str, default: int, low: int, high: int, path: str) -> int:
    v = obj.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidRequest(f"{path}{key}", f"must be an integer, got {type(v).__name__}")
    if not low <= v <= high:
        raise InvalidRequest(f"{path}{key}", f"must be in {low}..{high}, got {v}")
    return v


def _float(obj: Mapping[str, Any], key: str, default: float, low: float, high: float, path: str,
           low_open: bool = False) -> float:
    v = obj.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidRequest(f"{path}{key}", f"must be a finite number, got {v!r}")
    if v < low or v > high or (low_open and v == low):
        lo = f"> {low}" if low_open else f">= {low}"
        raise InvalidRequest(f"{path}{key}", f"must be {lo} and <= {high}, got {v}")
    return float(v)


def sampling_from_obj(obj: Mapping[str, Any], *, max_tokens_limit: int, path: str = "",
                      default_max_tokens: int = 64) -> SamplingParams:
    """Read max_tokens, temperature, top_p, top_k, seed and stop from a request object.

    Raises:
        InvalidRequest: naming the first bad field (e.g. `temperature: must be >= 0.0 ...`).
    """
    if not isinstance(obj, Mapping):
        raise InvalidRequest(path.rstrip(".") or "request", "must be an object")
    max_tokens = _int(obj, "max_tokens", min(default_max_tokens, max_tokens_limit), 1, max_tokens_limit, path)
    temperature = _float(obj, "temperature", 1.0, 0.0, 100.0, path)
    top_p = _float(obj, "top_p", 1.0, 0.0, 1.0, path, low_open=True)
    top_k = _int(obj, "top_k", 0, 0, 1 << 20, path)
    seed_raw = obj.get("seed")
    seed = None if seed_raw is None else _int(obj, "seed", 0, 0, MAX_SEED, path)
    stop_raw = obj.get("stop")
    if stop_raw is None:
        stop: tuple[str, ...] = ()
    elif isinstance(stop_raw, str):
        stop = (stop_raw,)
    elif isinstance(stop_raw, list):
        stop = tuple(stop_raw)
    else:
        raise InvalidRequest(f"{path}stop", "must be a string or a list of strings")
    if len(stop) > MAX_STOP:
        raise InvalidRequest(f"{path}stop", f"at most {MAX_STOP} stop strings, got {len(stop)}")
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS:
            raise InvalidRequest(f"{path}stop[{i}]", f"must be a non-empty string of at most {MAX_STOP_CHARS} chars")
    ignore_eos = obj.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InvalidRequest(f"{path}ignore_eos", "must be true or false")
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                          seed=seed, stop=stop, ignore_eos=ignore_eos)


def messages_from_obj(obj: Any, path: str = "messages") -> list[Message]:
    """Validate an OpenAI-style message list [{"role", "content"}, ...].

    Raises:
        InvalidRequest: naming the message and field (e.g. `messages[2].content: must be a string`).
    """
    if not isinstance(obj, list) or not obj:
        raise InvalidRequest(path, "must be a non-empty list of {role, content} objects")
    if len(obj) > MAX_MESSAGES:
        raise InvalidRequest(path, f"at most {MAX_MESSAGES} messages, got {len(obj)}")
    out: list[Message] = []
    total = 0
    for i, m in enumerate(obj):
        if not isinstance(m, Mapping):
            raise InvalidRequest(f"{path}[{i}]", "must be an object {role, content}")
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"{path}[{i}].role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: only text parts are served by a text model
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidRequest(f"{path}[{i}].content[{j}]", "must be {\"type\": \"text\", \"text\": str}")
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise InvalidRequest(f"{path}[{i}].content", f"must be a string, got {type(content).__name__}")
        total += len(content)
        if total > MAX_TEXT_CHARS:
            raise InvalidRequest(f"{path}[{i}].content", f"messages exceed {MAX_TEXT_CHARS} characters in all")
        out.append(Message(role=str(role), content=content))
    return out


def prompt_from_obj(obj: Any, path: str = "prompt") -> str:
    """Validate a completion prompt (a string).

    Raises:
        InvalidRequest: not a non-empty string, or longer than MAX_TEXT_CHARS.
    """
    if not isinstance(obj, str) or not obj:
        raise InvalidRequest(path, "must be a non-empty string")
    if len(obj) > MAX_TEXT_CHARS:
        raise InvalidRequest(path, f"longer than {MAX_TEXT_CHARS} characters")
    return obj
