"""LLM SDK: serve a causal LM checkpoint from a block (engine, block, split stages, tensor wire).

Needs torch, transformers, tokenizers and safetensors (the `llm` extra); `import sdk` does not import this.
Names follow AIOS's LLM SDK ("method 1") where it has them: `TransformersUtils`, `LLMMetrics`.
"""

from sdk.llm.engine import LLMEngine
from sdk.llm.errors import (
    CacheMiss,
    ContextTooLong,
    EngineStopped,
    InvalidRequest,
    LlmError,
    ModelLoadError,
    OverCapacity,
    TensorWireError,
)
from sdk.llm.generation import Completion, Delta, Generation, Usage
from sdk.llm.params import Message, SamplingParams, messages_from_obj, sampling_from_obj
from sdk.llm.stats import LLMMetrics

__all__ = [
    "CacheMiss",
    "Completion",
    "ContextTooLong",
    "Delta",
    "EngineStopped",
    "Generation",
    "InvalidRequest",
    "LLMEngine",
    "LLMMetrics",
    "LlmError",
    "Message",
    "ModelLoadError",
    "OverCapacity",
    "SamplingParams",
    "TensorWireError",
    "Usage",
    "messages_from_obj",
    "sampling_from_obj",
]
