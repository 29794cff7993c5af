"""AEAD frames of an established session (sans-IO): one Sealer and one Opener per direction.

Frame = header(12) || ChaCha20-Poly1305-IETF(key_epoch, nonce=header, ad=header, plaintext).
header = epoch (u32, big-endian) || counter (u64): the nonce is the header, so a (key, nonce)
pair is never reused as long as counters strictly increase inside an epoch, which the Sealer
guarantees and the Opener enforces. Sessions ride an ordered stream (TCP), so the next counter is
exactly last + 1: a lower one is a replay, a higher one a gap (out_of_order); both close the
session. Rekey: after `rekey_frames` frames or `rekey_s` seconds the sender moves to epoch + 1
with key' = BLAKE2b(key, "rekey"), counter 0; the old key is dropped on both sides (forward
secrecy inside a session, too). Time comes in as `now`; nothing here does IO.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nacl.bindings

from federation.errors import SessionError, SessionReason
from federation.sessions.aead import open_after, seal_after, seal_in_place

HEADER_BYTES = 12
TAG_BYTES = 16
OVERHEAD = HEADER_BYTES + TAG_BYTES
KEY_BYTES = 32
# 2^32 frames per key (the bound; the 64-bit counter could go much further) or an hour.
REKEY_FRAMES = 1 << 32
REKEY_S = 3600.0
# A peer that keeps an epoch this much past rekey_s is refused (its clock may lag a little).
REKEY_GRACE_S = 120.0
MAX_EPOCH = (1 << 32) - 1
_HDR = struct.Struct(">IQ")
_blake2b = nacl.bindings.crypto_generichash_blake2b_salt_personal


def kdf(key: bytes, label: bytes, data: bytes = b"") -> bytes:
    """32-byte BLAKE2b keyed hash of `data`, domain-separated by `label` (≤16 bytes, the personal)."""
    person = label.ljust(16, b"\x00")
    out: bytes = _blake2b(data, digest_size=KEY_BYTES, key=key, person=person)
    return out


def next_key(key: bytes) -> bytes:
    """The key of the next epoch; the old one cannot be computed back from it."""
    return kdf(key, b"aiosd-rekey")


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Size cap and rekey thresholds of one session (units in names)."""

    max_frame_bytes: int = (1 << 20) + 4096
    rekey_frames: int = REKEY_FRAMES
    rekey_s: float = REKEY_S


DEFAULT_LIMITS = FrameLimits()


class Sealer:
    """The sending direction: strictly increasing counters, rekey by count or age."""

    __slots__ = ("_key", "counter", "epoch", "epoch_started", "limits", "rekeys")

    def __init__(self, key: bytes, now: float, limits: FrameLimits) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"key: must be {KEY_BYTES} bytes")
        self._key, self.limits = key, limits
        self.epoch, self.counter, self.epoch_started, self.rekeys = 0, 0, now, 0

    def seal(self, plaintext: bytes, now: float) -> bytearray:
        """One frame carrying `plaintext`.

        Raises:
            ValueError: the frame would exceed the cap (our bug: callers split bulk data).
            SessionError(BAD_EPOCH): the session has used every epoch (reconnect).
        """
        if len(plaintext) + OVERHEAD > self.limits.max_frame_bytes:
            raise ValueError(f"plaintext: {len(plaintext)} bytes do not fit a frame")
        header = self._next_header(now)
        return seal_after(header, plaintext, self._key)

    def seal_in_place(self, buf: bytearray, now: float) -> bytearray:
        """The same frame built in `buf` = HEADER_BYTES spare || plaintext || TAG_BYTES spare (bulk
        data read straight into its frame: no copy)."""
        if len(buf) > self.limits.max_frame_bytes:
            raise ValueError(f"buf: {len(buf)} bytes do not fit a frame")
        buf[:HEADER_BYTES] = self._next_header(now)
        seal_in_place(buf, HEADER_BYTES, self._key)
        return buf

    def _next_header(self, now: float) -> bytes:
        lim = self.limits
        if self.counter >= lim.rekey_frames or now - self.epoch_started >= lim.rekey_s:
            if self.epoch >= MAX_EPOCH:
                raise SessionError(SessionReason.BAD_EPOCH, "every key epoch is used up")
            self._key, self.epoch, self.counter = next_key(self._key), self.epoch + 1, 0
            self.epoch_started, self.rekeys = now, self.rekeys + 1
        header = _HDR.pack(self.epoch, self.counter)
        self.counter += 1
        return header


class Opener:
    """The receiving direction: size cap first, then counter order, then the AEAD tag.

    Every refusal raises SessionError with its reason; the caller must close the session then
    (the Opener stays refusing: a failed frame never moves its state).
    """

    __slots__ = ("_key", "_scratch", "epoch", "epoch_started", "expected", "limits", "rekeys")

    def __init__(self, key: bytes, now: float, limits: FrameLimits) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"key: must be {KEY_BYTES} bytes")
        self._key, self.limits = key, limits
        self.epoch, self.expected, self.epoch_started, self.rekeys = 0, 0, now, 0
        self._scratch = bytearray(64 * 1024)  # plaintexts land here: memory already touched

    def check_size(self, n: int) -> None:
        """The cap on a frame of `n` bytes (a driver calls it with a length prefix, before reading)."""
        if n > self.limits.max_frame_bytes:
            raise SessionError(SessionReason.TOO_LARGE, f"frame: {n} > {self.limits.max_frame_bytes} bytes")
        if n < OVERHEAD:
            raise SessionError(SessionReason.TRUNCATED, f"frame: {n} < {OVERHEAD} bytes")

    def open(self, frame: bytes | bytearray, now: float) -> memoryview:
        """The plaintext of `frame`: a view valid until the next open() (copy what must outlive it).

        Raises:
            SessionError: TOO_LARGE, TRUNCATED, REPLAY, OUT_OF_ORDER, BAD_EPOCH, STALE_KEY, BAD_TAG.
        """
        self.check_size(len(frame))
        epoch, counter = _HDR.unpack_from(frame)
        key, rekey = self._key, False
        if epoch == self.epoch:
            if counter < self.expected:
                raise SessionError(SessionReason.REPLAY, f"frame: counter {counter} < {self.expected}")
            if counter > self.expected:
                raise SessionError(SessionReason.OUT_OF_ORDER, f"frame: counter {counter} > {self.expected}")
            if now - self.epoch_started > self.limits.rekey_s + REKEY_GRACE_S:
                raise SessionError(SessionReason.STALE_KEY, f"frame: epoch {epoch} is past its lifetime")
        elif epoch < self.epoch:
            raise SessionError(SessionReason.REPLAY, f"frame: epoch {epoch} < {self.epoch}")
        elif epoch == self.epoch + 1 and counter == 0:
            key, rekey = next_key(self._key), True
        else:
            raise SessionError(SessionReason.BAD_EPOCH, f"frame: epoch {epoch}, counter {counter}")
        need = len(frame) - OVERHEAD
        if need > len(self._scratch):
            self._scratch = bytearray(need)
        out = open_after(frame, HEADER_BYTES, key, self._scratch)
        if out is None:
            raise SessionError(SessionReason.BAD_TAG, "frame: authentication failed")
        if rekey:
            self._key, self.epoch, self.epoch_started, self.rekeys = key, epoch, now, self.rekeys + 1
        self.expected = counter + 1
        return out


__all__ = [
    "DEFAULT_LIMITS",
    "HEADER_BYTES",
    "KEY_BYTES",
    "OVERHEAD",
    "REKEY_FRAMES",
    "REKEY_GRACE_S",
    "REKEY_S",
    "TAG_BYTES",
    "FrameLimits",
    "Opener",
    "Sealer",
    "kdf",
    "next_key",
]
