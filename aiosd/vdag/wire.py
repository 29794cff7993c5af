"""p2p kinds of the vDAG data plane: `vdag.hop` (stage → next stage) and `vdag.result` (tail → entry).

A hop carries the input packet of one stage (msgpack AIOSPacket, files as raw bytes) and the
receipt chain so far; the receiver answers `vdag.hop_ack` once its block has run (the sender keeps
the input until then, and retries once on another instance when the ack does not come). The tail,
or any stage that fails for good, answers the entry node directly with `vdag.result`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from federation.strict import Wire

MAX_PACKET_BYTES = 900 << 10  # the envelope caps at 1 MiB; receipts and fields ride beside the packet
MAX_RECEIPTS = 1100  # a 1,000-stage vDAG plus its fan-in branches


class PayloadRef(Wire):
    """A packet kept by `holder` (refs.py): fetched with `vdag.fetch`, checked against sha256/size."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, le=64 << 20)
    holder: str = Field(min_length=1, max_length=128)
    holder_addr: str = Field(min_length=1, max_length=300)


class FetchPayload(Wire):
    kind: Literal["vdag.fetch"] = "vdag.fetch"
    v: Literal[1] = 1
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Hop(Wire):
    kind: Literal["vdag.hop"] = "vdag.hop"
    v: Literal[1] = 1
    vdag: str = Field(min_length=1, max_length=300)
    label: str = Field(min_length=1, max_length=600)  # the stage to run
    from_label: str = Field("", max_length=600)  # "" from the entry
    session_id: str = Field(min_length=1, max_length=700)
    seq_no: int = Field(ge=0, le=2**63 - 1)
    packet: bytes = Field(max_length=MAX_PACKET_BYTES)  # b"" when `ref` is set
    ref: PayloadRef | None = None
    entry: str = Field(min_length=1, max_length=128)  # the entry node (the tail answers it)
    entry_addr: str = Field(min_length=1, max_length=300)
    instance: str = Field("", max_length=128)  # fan-in: the instance every branch goes to
    deadline: float  # wall clock: the entry stops waiting then
    receipts: tuple[bytes, ...] = Field((), max_length=MAX_RECEIPTS)


class HopAck(Wire):
    kind: Literal["vdag.hop_ack"] = "vdag.hop_ack"
    v: Literal[1] = 1
    status: int = Field(ge=100, le=599)
    message: str = Field("", max_length=4000)
    node: str = Field("", max_length=128)


class Result(Wire):
    kind: Literal["vdag.result"] = "vdag.result"
    v: Literal[1] = 1
    vdag: str = Field(min_length=1, max_length=300)
    session_id: str = Field(min_length=1, max_length=700)
    seq_no: int = Field(ge=0, le=2**63 - 1)
    status: int = Field(ge=100, le=599)
    code: str = Field("", max_length=64)
    message: str = Field("", max_length=4000)
    stage: str = Field("", max_length=600)
    block: str = Field("", max_length=128)
    node: str = Field("", max_length=128)
    packets: bytes = Field(b"", max_length=MAX_PACKET_BYTES)  # msgpack list of the tail's output packets
    ref: PayloadRef | None = None  # the packets by reference, when large
    receipts: tuple[bytes, ...] = Field((), max_length=MAX_RECEIPTS)


class ResultAck(Wire):
    kind: Literal["vdag.result_ack"] = "vdag.result_ack"
    v: Literal[1] = 1
    taken: bool  # False: the entry had already answered this (session, seq), or stopped waiting


VDAG_MODELS: tuple[type[BaseModel], ...] = (Hop, HopAck, Result, ResultAck, FetchPayload)

__all__ = ["MAX_PACKET_BYTES", "VDAG_MODELS", "FetchPayload", "Hop", "HopAck", "PayloadRef", "Result", "ResultAck"]
