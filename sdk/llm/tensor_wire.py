"""Tensors on the wire between split stages: a fixed header (dtype + shape) followed by the raw bytes.

Frame (little-endian):
    magic   4 bytes  b"ATW1"
    dtype   u8       code in DTYPE_CODES (float32 1, float16 2, bfloat16 3, int64 4, int32 5, uint8 6)
    ndim    u8       0..MAX_NDIM
    pad     u16      0
    dims    ndim x u64
    data    prod(dims) * itemsize bytes, C order
decode() checks every header field against the bytes before building a tensor, so a truncated or forged
frame is a TensorWireError, never a wrong-shaped tensor. In a block packet a frame travels as an AIOSFile
(`to_file` / `from_file`); the packet's `data` stays JSON.
"""

from __future__ import annotations

import json
import math
import struct

import torch

from sdk.llm.errors import TensorWireError
from sdk.packet import AIOSFile

MAGIC = b"ATW1"
_HEAD = struct.Struct("<4sBBH")
DTYPE_CODES: dict[torch.dtype, int] = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3, torch.int64: 4,
                                       torch.int32: 5, torch.uint8: 6}
_CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
# Hidden states are [batch, tokens, hidden]; 8 dims is generous and bounds the header.
MAX_NDIM = 8
# One frame carries at most one prefill's activations; 1 GiB bounds the memory a peer can make us allocate.
DEFAULT_MAX_BYTES = 1 << 30
FILE_KIND = "aiosd.tensor.v1"


def encode(t: torch.Tensor) -> bytes:
    """The frame of a tensor (moved to CPU, made contiguous).

    Raises:
        TensorWireError: the dtype has no code, or the tensor has more than MAX_NDIM dims.
    """
    code = DTYPE_CODES.get(t.dtype)
    if code is None:
        raise TensorWireError(f"dtype {t.dtype} has no wire code (supported: {sorted(map(str, DTYPE_CODES))})")
    if t.dim() > MAX_NDIM:
        raise TensorWireError(f"tensor has {t.dim()} dims, at most {MAX_NDIM} travel")
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    header = _HEAD.pack(MAGIC, code, t.dim(), 0) + struct.pack(f"<{t.dim()}Q", *t.shape)
    if not flat.numel():
        return header
    return b"".join((header, flat.view(torch.uint8).numpy().data))  # one copy: the join


def decode(frame: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES,
           device: str | torch.device = "cpu") -> torch.Tensor:
    """The tensor of a frame.

    Raises:
        TensorWireError: bad magic, unknown dtype, too many dims, or a data length that does not match
            dtype x shape (the message names the field).
    """
    buf = memoryview(frame).cast("B")
    if len(buf) < _HEAD.size:
        raise TensorWireError(f"header: frame of {len(buf)} bytes is shorter than the {_HEAD.size}-byte header")
    magic, code, ndim, _ = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise TensorWireError(f"magic: expected {MAGIC!r}, got {bytes(magic)!r}")
    dtype = _CODE_DTYPES.get(code)
    if dtype is None:
        raise TensorWireError(f"dtype: unknown code {code}")
    if ndim > MAX_NDIM:
        raise TensorWireError(f"ndim: {ndim} exceeds {MAX_NDIM}")
    off = _HEAD.size + 8 * ndim
    if len(buf) < off:
        raise TensorWireError(f"shape: frame ends inside the {ndim} dims")
    shape = struct.unpack_from(f"<{ndim}Q", buf, _HEAD.size)
    itemsize = torch.empty((), dtype=dtype).element_size()
    want = math.prod(shape) * itemsize
    if want > max_bytes:
        raise TensorWireError(f"shape: {list(shape)} x {dtype} is {want} bytes, over the {max_bytes}-byte limit")
    if len(buf) - off != want:
        raise TensorWireError(f"data: shape {list(shape)} x {dtype} needs {want} bytes, frame carries {len(buf) - off}")
    if want == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    t = torch.frombuffer(bytearray(buf[off:]), dtype=torch.uint8).view(dtype).reshape(shape)
    return t if torch.device(device).type == "cpu" else t.to(device)


def to_file(t: torch.Tensor, name: str = "hidden") -> AIOSFile:
    """A packet file carrying the frame; metadata names it and repeats dtype and shape for readers."""
    meta = {"kind": FILE_KIND, "name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
    return AIOSFile(metadata=json.dumps(meta), file_data=encode(t))


def from_file(f: AIOSFile, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, torch.Tensor]:
    """(name, tensor) of a packet file written by to_file.

    Raises:
        TensorWireError: the metadata is not a tensor file's, or the frame is malformed.
    """
    try:
        meta = json.loads(f.metadata) if f.metadata else {}
    except ValueError as e:
        raise TensorWireError(f"metadata: not JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") != FILE_KIND:
        raise TensorWireError(f"metadata.kind: must be {FILE_KIND!r}")
    return str(meta.get("name", "")), decode(f.file_data, max_bytes=max_bytes)
