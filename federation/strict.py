"""The one base of our wire and record models: immutable, strict types, no unknown fields (STYLE §6)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

WIRE_CONFIG = ConfigDict(frozen=True, strict=True, extra="forbid")


class Wire(BaseModel):
    """Base of every p2p message and replicated record model."""

    model_config = WIRE_CONFIG


__all__ = ["WIRE_CONFIG", "Wire"]
