"""RFC 6455 §5.1: MaskCheck follows client frame headers in any chunking and flags an unmasked frame."""

from __future__ import annotations

import os

from federation.ws_mask import MaskCheck


def _frame(payload: bytes, masked: bool = True) -> bytes:
    n = len(payload)
    b1 = 0x80 if masked else 0
    if n < 126:
        head = bytes([0x82, b1 | n])
    elif n < 65536:
        head = bytes([0x82, b1 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, b1 | 127]) + n.to_bytes(8, "big")
    return head + (b"abcd" if masked else b"") + payload


def test_masked_frames_pass_in_any_chunking_and_an_unmasked_one_is_caught() -> None:
    # Payloads that look like unmasked headers must be skipped, not parsed.
    stream = b"".join(_frame(os.urandom(k) if k else b"", True) for k in (0, 1, 125, 126, 300, 65535, 65536))
    stream += _frame(b"\x82\x05" * 40)
    for chunk in (1, 3, 7, 1000, len(stream)):
        m = MaskCheck()
        assert all(m.feed(stream[i:i + chunk]) for i in range(0, len(stream), chunk)), chunk
        assert not m.feed(_frame(b"x", masked=False)) and m.violated
        assert not m.feed(_frame(b"y"))  # stays refused
    assert MaskCheck().feed(b"\x81")  # one header byte: not yet known
    m = MaskCheck()
    assert m.feed(b"\x81") and not m.feed(b"\x05")
