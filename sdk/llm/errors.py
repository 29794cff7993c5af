"""Errors of the LLM SDK (a branch of the block SDK's tree, see sdk/errors.py).

    SdkError
    └── LlmError
        ├── InvalidRequest(ValueError)   a request field is wrong; `.field` names it (answer 400)
        │   └── ContextTooLong           prompt (+ max_tokens) exceeds the context; `.limit` (answer 400)
        ├── OverCapacity                 the bounded request queue is full (answer 429, never wait)
        ├── ModelLoadError               the checkpoint directory cannot be loaded (the instance cannot start)
        ├── CacheMiss                    a stage has no KV cache for (session, position): replay the history
        ├── TensorWireError(ValueError)  a tensor frame's header does not match its bytes
        └── EngineStopped                the engine was closed while a request was pending

"The caller did wrong" (InvalidRequest, OverCapacity, TensorWireError) is answered per request; the
engine keeps serving others.
"""

from __future__ import annotations

from sdk.errors import SdkError


class LlmError(SdkError):
    """Root of every error the LLM SDK raises on purpose."""


class InvalidRequest(LlmError, ValueError):
    """A request field is malformed or out of range; `field` is its path (e.g. `messages[1].role`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ContextTooLong(InvalidRequest):
    """The prompt does not fit the model's context; `limit` is the context length in tokens."""

    def __init__(self, field: str, tokens: int, limit: int) -> None:
        super().__init__(field, f"{tokens} tokens do not fit the context of {limit} tokens "
                                f"(the prompt must leave room for at least one generated token)")
        self.tokens = tokens
        self.limit = limit


class OverCapacity(LlmError):
    """Every batch slot is busy and the waiting queue is at its bound."""

    def __init__(self, running: int, waiting: int) -> None:
        super().__init__(f"over capacity: {running} sessions decoding and {waiting} waiting (queue full); "
                         f"retry later")
        self.running = running
        self.waiting = waiting


class ModelLoadError(LlmError):
    """The checkpoint (config, weights or tokenizer) cannot be loaded; the message names the file or key."""


class CacheMiss(LlmError):
    """A stage was asked to continue a session at a position its KV cache does not hold."""

    def __init__(self, session_id: str, expected: int, got: int) -> None:
        super().__init__(f"session {session_id!r}: stage cache holds {expected} positions, request starts at "
                         f"{got}; replay the token history")
        self.session_id = session_id
        self.expected = expected
        self.got = got


class TensorWireError(LlmError, ValueError):
    """A tensor frame is malformed: bad magic, unknown dtype, or a shape that does not match the bytes."""


class EngineStopped(LlmError):
    """The engine was closed; pending and new requests fail with this."""
