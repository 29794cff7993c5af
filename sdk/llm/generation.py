"""One request's life outside the engine: its handle (events, cancel, result) and its text assembly.

`Generation` is what callers hold: a thread-safe event queue the engine thread fills, `cancel()`, and
`result()` / `stream()` to consume it. `TextAssembler` turns token ids into text deltas: it never emits
half a UTF-8 character and holds back text that could be the start of a stop string.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sdk.llm.errors import LlmError

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class Delta:
    """New text (may be empty while a stop string or a UTF-8 sequence is pending) and the new token id."""

    text: str
    token_id: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request (prompt and generated, OpenAI's usage object)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """prompt + completion."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """The finished request."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    ttft_s: float = 0.0
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The request failed inside the engine."""

    error: Exception


Event = Delta | Completion | Failed


class Generation:
    """Handle of a submitted request. Consume with result(), stream() or next_event(); cancel() any time."""

    def __init__(self, request_id: int, notify: Callable[[], None] | None = None) -> None:
        self.request_id = request_id
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._notify = notify
        self.final: Completion | None = None

    # -- engine side --------------------------------------------------------------------------------
    def put(self, event: Event) -> None:
        """Deliver an event (engine thread)."""
        self._events.put(event)
        if self._notify is not None:
            self._notify()

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._cancel.is_set()

    # -- caller side --------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating: the engine ends the request at its next step and frees its KV-cache slot."""
        self._cancel.set()

    def next_event(self, timeout: float | None = None) -> Event:
        """The next event; raises queue.Empty after `timeout` seconds."""
        return self._events.get(timeout=timeout)

    def stream(self, timeout: float | None = 60.0) -> Iterator[Delta]:
        """Yield deltas until the request finishes (then `self.final` holds the Completion).

        Raises:
            LlmError: the engine failed the request. queue.Empty: no event for `timeout` seconds.
        """
        while True:
            ev = self.next_event(timeout)
            if isinstance(ev, Delta):
                yield ev
            elif isinstance(ev, Completion):
                self.final = ev
                return
            else:
                raise ev.error

    def result(self, timeout: float | None = 60.0) -> Completion:
        """Block until the request finishes; its Completion (raises like stream())."""
        for _ in self.stream(timeout):
            pass
        assert self.final is not None  # stream() returns only after setting it
        return self.final


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of text that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


@dataclass(slots=True)
class TextAssembler:
    """Incremental detokenization with stop strings (vLLM's prefix/read offsets)."""

    tokenizer: Any
    stops: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    _prefix: int = 0
    _read: int = 0

    def add(self, token_id: int) -> tuple[str, bool]:
        """Append a token; (text that may be emitted now, True when a stop string ended the text)."""
        self.ids.append(token_id)
        prefix_text = self.tokenizer.decode(self.ids[self._prefix:self._read], skip_special_tokens=True)
        new_text = self.tokenizer.decode(self.ids[self._prefix:], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self.ids)
        if self.stops:
            start = max(0, self.emitted - max(len(s) for s in self.stops))
            hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                return self._take(len(self.text)), True
        return self._take(len(self.text) - _holdback(self.text, self.stops)), False

    def flush(self) -> str:
        """The text still held back, trailing partial characters included (end of a request not stopped by
        a stop string)."""
        prefix_text = self.tokenizer.decode(self.ids[self._prefix:self._read], skip_special_tokens=True)
        new_text = self.tokenizer.decode(self.ids[self._prefix:], skip_special_tokens=True)
        if len(new_text) > len(prefix_text):
            self.text += new_text[len(prefix_text):]
            self._prefix = self._read = len(self.ids)
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        out = self.text[self.emitted:upto]
        self.emitted = upto
        return out


def failed(error: Exception) -> Failed:
    """A Failed event, typed as the SDK's error when it is not already one."""
    return Failed(error if isinstance(error, LlmError) else LlmError(f"{type(error).__name__}: {error}"))
