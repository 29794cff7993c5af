"""RFC 6455 §5.1: a server must close the connection on a client frame that is not masked.

aiohttp's reader accepts unmasked client frames; `MaskCheck` follows the frame headers of the
client's byte stream (sans-IO: bytes in, verdict out) and says when one is unmasked. The aiohttp
glue is federation/edge_http.py (`MaskedWebSocketResponse`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A close frame (server frames are not masked) with status 1002, protocol error.
CLOSE_1002 = b"\x88\x02\x03\xea"


@dataclass
class MaskCheck:
    violated: bool = False
    _hdr: bytearray = field(default_factory=bytearray)
    _skip: int = 0  # payload bytes of the current frame still to pass over

    def _need(self) -> int:
        if len(self._hdr) < 2:
            return 2
        n = self._hdr[1] & 0x7F
        return 2 + (2 if n == 126 else 8 if n == 127 else 0) + (4 if self._hdr[1] & 0x80 else 0)

    def _length(self) -> int:
        n = self._hdr[1] & 0x7F
        if n == 126:
            return int.from_bytes(self._hdr[2:4], "big")
        if n == 127:
            return int.from_bytes(self._hdr[2:10], "big")
        return n

    def feed(self, data: bytes) -> bool:
        """Follow `data` (the next bytes from the client); False once any frame is unmasked."""
        i, end = 0, len(data)
        while i < end and not self.violated:
            if self._skip:
                k = min(self._skip, end - i)
                self._skip -= k
                i += k
                continue
            take = min(self._need() - len(self._hdr), end - i)
            self._hdr += data[i:i + take]
            i += take
            if len(self._hdr) >= 2 and not self._hdr[1] & 0x80:
                self.violated = True
            elif len(self._hdr) == self._need():
                self._skip = self._length()
                self._hdr.clear()
        return not self.violated


__all__ = ["CLOSE_1002", "MaskCheck"]
