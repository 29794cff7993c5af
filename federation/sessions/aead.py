"""ChaCha20-Poly1305-IETF straight on libsodium (PyNaCl's cffi module), without copies.

PyNaCl's binding checks its arguments in Python and copies the result out of a cffi buffer;
at 1 KB that is most of the cost of a frame. Here the output is allocated once with room for
the frame header, and the ciphertext is read in place (a pointer into the frame). Same library,
same primitive: crypto_aead_chacha20poly1305_ietf_{encrypt,decrypt}.
"""

from __future__ import annotations

from nacl._sodium import ffi, lib  # type: ignore[import-not-found]  # PyNaCl's compiled cffi module, no stubs

TAG_BYTES = 16
NONCE_BYTES = 12
KEY_BYTES = 32
_encrypt = lib.crypto_aead_chacha20poly1305_ietf_encrypt
_decrypt = lib.crypto_aead_chacha20poly1305_ietf_decrypt
_from_buffer = ffi.from_buffer
_NULL = ffi.NULL


def seal_after(header: bytes, plaintext: bytes | bytearray, key: bytes) -> bytearray:
    """header || AEAD(key, nonce=header, ad=header, plaintext): header must be the 12-byte nonce."""
    n = len(header)
    out = bytearray(n + len(plaintext) + TAG_BYTES)
    out[:n] = header
    _encrypt(_from_buffer(out) + n, _NULL, _from_buffer(plaintext), len(plaintext), header, n, _NULL, header, key)
    return out


def seal_in_place(buf: bytearray, n: int, key: bytes) -> None:
    """buf = nonce(n) || plaintext || 16 spare bytes: encrypt the plaintext in place, tag at the end
    (libsodium allows the output to be the input). The frame is then buf itself: no copy."""
    mlen = len(buf) - n - TAG_BYTES
    if mlen < 0:
        raise ValueError("buf: no room for the tag")
    header = bytes(buf[:n])
    p = _from_buffer(buf) + n
    _encrypt(p, _NULL, p, mlen, header, n, _NULL, header, key)


def open_after(frame: bytes | bytearray, n: int, key: bytes, into: bytearray | None = None
               ) -> memoryview | None:
    """The plaintext of frame[n:] sealed with nonce = ad = frame[:n], written into `into` (reused
    by the caller; grown when short) or a new buffer; None when the tag is wrong."""
    clen = len(frame) - n
    if clen < TAG_BYTES:
        return None
    mlen = clen - TAG_BYTES
    out = into if into is not None and len(into) >= mlen else bytearray(max(mlen, 1))
    header = bytes(frame[:n])
    src = _from_buffer(frame) + n
    if _decrypt(_from_buffer(out), _NULL, _NULL, src, clen, header, n, header, key) != 0:
        return None
    return memoryview(out)[:mlen]


__all__ = ["KEY_BYTES", "NONCE_BYTES", "TAG_BYTES", "open_after", "seal_after", "seal_in_place"]
