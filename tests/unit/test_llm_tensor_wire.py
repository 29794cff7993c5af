"""Tensor frames between split stages: round trips, and every malformed header is refused."""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("torch")

import torch

from sdk.llm import tensor_wire
from sdk.llm.errors import TensorWireError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                                   torch.uint8])
def test_round_trip_is_exact(dtype: torch.dtype) -> None:
    t = (torch.randn(2, 3, 7) * 50).to(dtype)
    back = tensor_wire.decode(tensor_wire.encode(t))
    assert back.dtype == dtype and back.shape == t.shape and torch.equal(back, t)


def test_header_layout_and_scalar_and_empty() -> None:
    frame = tensor_wire.encode(torch.zeros(1, 4, dtype=torch.float32))
    assert frame[:4] == b"ATW1" and frame[4] == 1 and frame[5] == 2
    assert struct.unpack_from("<2Q", frame, 8) == (1, 4) and len(frame) == 8 + 16 + 16
    assert tensor_wire.decode(tensor_wire.encode(torch.tensor(3.5))).item() == 3.5
    assert tensor_wire.decode(tensor_wire.encode(torch.zeros(0, 5))).shape == (0, 5)


def test_non_contiguous_tensor_travels_as_its_values() -> None:
    t = torch.arange(12.0).reshape(3, 4).t()
    assert torch.equal(tensor_wire.decode(tensor_wire.encode(t)), t)


def _frame() -> bytearray:
    return bytearray(tensor_wire.encode(torch.ones(2, 3)))


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda f: f[:5], "header"),
    (lambda f: b"XXXX" + f[4:], "magic"),
    (lambda f: f[:4] + bytes([99]) + f[5:], "dtype"),
    (lambda f: f[:5] + bytes([9]) + f[6:], "ndim"),
    (lambda f: f[:12], "shape"),
    (lambda f: f[:-1], "data"),
    (lambda f: f + b"\0", "data"),
    (lambda f: f[:8] + struct.pack("<Q", 1 << 40) + f[16:], "shape"),
])
def test_malformed_frames_are_refused(mutate: object, field: str) -> None:
    with pytest.raises(TensorWireError, match=f"^{field}: "):
        tensor_wire.decode(mutate(_frame()))  # type: ignore[operator]


def test_unsupported_dtype_is_refused_on_encode() -> None:
    with pytest.raises(TensorWireError, match="no wire code"):
        tensor_wire.encode(torch.zeros(2, dtype=torch.complex64))


def test_packet_file_round_trip_and_wrong_kind() -> None:
    t = torch.randn(1, 2, 8)
    f = tensor_wire.to_file(t, "hidden")
    name, back = tensor_wire.from_file(f)
    assert name == "hidden" and torch.equal(back, t)
    f.metadata = '{"kind": "other"}'
    with pytest.raises(TensorWireError, match="^metadata.kind"):
        tensor_wire.from_file(f)
