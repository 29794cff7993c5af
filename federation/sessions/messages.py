"""What one frame's plaintext carries (sans-IO): version, message type, call id, then the content.

    plaintext = MSG_V (u8) || type (u8) || call id (u32, big-endian) || content
    content   = msgpack [kind, body]      REQ, ONEWAY, ONEWAY_ACK, ANS, RAW, OPEN
              = msgpack [status, reason]  ERR   (a refusal; HTTP-like status codes)
              = empty                     ACK
              = raw bytes                 DATA, DATA_END (bulk answer pieces; END is the last)

The kind and the body's own `v` are inside the ciphertext; so is everything else but the frame
header. A body is decoded against the schema registry by `decode_body` (typed errors naming the
field, as the envelope did).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
from pydantic import BaseModel, ValidationError

from federation.certs import MSGPACK_ERRORS, first_error, pack
from federation.errors import AuthError, AuthReason

MSG_V = 1
_PREFIX = struct.Struct(">BBI")
PREFIX_BYTES = _PREFIX.size
MAX_KIND_LEN = 64
MAX_CALL_ID = (1 << 32) - 1


class MsgType(IntEnum):
    REQ = 1
    ONEWAY = 2
    ONEWAY_ACK = 3
    ANS = 4
    ERR = 5
    ACK = 6
    RAW = 7
    DATA = 8
    DATA_END = 9
    OPEN = 10


_TYPES = {int(t): t for t in MsgType}


@dataclass(slots=True)  # not frozen: a frozen 8-field init costs more than the AEAD of 1 KB
class Message:
    """A decoded plaintext: `kind`/`body` for kinds, `status`/`reason` for ERR, `data` for DATA."""

    type: MsgType
    call: int
    kind: str = ""
    body: Any = None
    status: int = 0
    reason: str = ""
    data: bytes | bytearray | memoryview = b""  # DATA: a view into the decrypted frame
    size: int = 0  # bytes of the whole plaintext (caps on pre-trust requests use it)


def encode(type_: MsgType, call: int, kind: str, body: BaseModel) -> bytes:
    """A message with a kind: its body is the model's dump (which carries its own `v`)."""
    return _PREFIX.pack(MSG_V, type_, call) + pack([kind, body.model_dump()])


def encode_err(call: int, status: int, reason: str) -> bytes:
    return _PREFIX.pack(MSG_V, MsgType.ERR, call) + pack([status, reason[:200]])


def encode_ack(call: int) -> bytes:
    return _PREFIX.pack(MSG_V, MsgType.ACK, call)


def encode_data(call: int, data: bytes, *, last: bool) -> bytes:
    return _PREFIX.pack(MSG_V, MsgType.DATA_END if last else MsgType.DATA, call) + data


def data_frame_buffer(call: int, n: int, *, last: bool, head: int, tail: int) -> bytearray:
    """A buffer for one DATA message of n bytes read in place: head spare bytes (the frame header),
    the prefix, n bytes to fill at [head + PREFIX_BYTES:], tail spare bytes (the tag)."""
    buf = bytearray(head + PREFIX_BYTES + n + tail)
    _PREFIX.pack_into(buf, head, MSG_V, MsgType.DATA_END if last else MsgType.DATA, call)
    return buf


def decode(plain: bytes | bytearray | memoryview) -> Message:
    """Split a plaintext into its parts (the body stays a raw msgpack object).

    Raises:
        AuthError: UNSUPPORTED_VERSION, MALFORMED (the detail names what).
    """
    if len(plain) < PREFIX_BYTES:
        raise AuthError(AuthReason.MALFORMED, "message: shorter than its prefix")
    v, t, call = _PREFIX.unpack_from(plain)
    if v != MSG_V:
        raise AuthError(AuthReason.UNSUPPORTED_VERSION, f"message.v: {v}")
    type_ = _TYPES.get(t)
    if type_ is None:
        raise AuthError(AuthReason.MALFORMED, f"message.type: {t}")
    if type_ in (MsgType.DATA, MsgType.DATA_END):
        return Message(type_, call, data=memoryview(plain)[PREFIX_BYTES:], size=len(plain))
    if type_ is MsgType.ACK:
        return Message(type_, call, size=len(plain))
    try:
        obj = msgpack.unpackb(plain[PREFIX_BYTES:], raw=False, use_list=False, strict_map_key=True)
    except MSGPACK_ERRORS:
        raise AuthError(AuthReason.MALFORMED, "message: content is not msgpack") from None
    if not isinstance(obj, tuple) or len(obj) != 2:
        raise AuthError(AuthReason.MALFORMED, "message: content is not a pair")
    a, b = obj
    if type_ is MsgType.ERR:
        if not isinstance(a, int) or not isinstance(b, str):
            raise AuthError(AuthReason.MALFORMED, "message.err: not [status, reason]")
        return Message(type_, call, status=a, reason=b, size=len(plain))
    if not isinstance(a, str) or not 0 < len(a) <= MAX_KIND_LEN:
        raise AuthError(AuthReason.MALFORMED, "message.kind: not a short string")
    return Message(type_, call, kind=a, body=b, size=len(plain))


def decode_body(msg: Message, schemas: Mapping[str, type[BaseModel]]) -> BaseModel:
    """The typed body of a kind message.

    Raises:
        AuthError: UNKNOWN_KIND, BAD_BODY ("body.<field path>: <problem>").
    """
    model = schemas.get(msg.kind)
    if model is None:
        raise AuthError(AuthReason.UNKNOWN_KIND, f"message.kind: {msg.kind!r}")
    try:
        return model.model_validate(msg.body)
    except ValidationError as e:
        raise AuthError(AuthReason.BAD_BODY, "body." + first_error(e)) from None


__all__ = [
    "MAX_CALL_ID",
    "MSG_V",
    "PREFIX_BYTES",
    "Message",
    "MsgType",
    "data_frame_buffer",
    "decode",
    "decode_body",
    "encode",
    "encode_ack",
    "encode_data",
    "encode_err",
]
