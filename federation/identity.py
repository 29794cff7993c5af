"""Node and network-CA keys (ed25519): generate, save (0600, atomic), load, sign, verify, box.

Ids are short hashes of public keys. This module does not decide trust (see certs.py) and never
logs key material. Files: one line of header + one line of base64 seed, so a CA key can never be
loaded as a node key by mistake.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path
from typing import ClassVar, Self

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from federation.errors import AlreadyExistsError, AuthError, AuthReason, IdentityError
from federation.sansio import NodeId
from storage.files import fsync_dir

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_SEED_BYTES = 32
# Longest file we read: header + base64 seed + slack; a bigger file is not ours (refuse early).
_MAX_KEY_FILE_BYTES = 256


def short_hash(public: bytes) -> str:
    """16 lowercase base32 chars of sha256(public): 80 bits, enough to never collide by accident."""
    return base64.b32encode(hashlib.sha256(public).digest()).decode("ascii").lower()[:16]


def node_id_of(public: bytes) -> NodeId:
    """The node id that belongs to an ed25519 public key."""
    return NodeId(short_hash(public))


def network_id_of(ca_public: bytes) -> str:
    """The network id that belongs to a CA public key."""
    return short_hash(ca_public)


def fingerprint_of(ca_public: bytes) -> str:
    """CA fingerprint pinned by join tokens: 'sha256:' + hex of sha256(public key)."""
    return "sha256:" + hashlib.sha256(ca_public).hexdigest()


def verify_signature(public: bytes, data: bytes, sig: bytes) -> bool:
    """True when `sig` is a valid ed25519 signature of `data` by `public`; never raises."""
    if len(public) != PUBLIC_KEY_BYTES or len(sig) != SIGNATURE_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(sig + data, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    return True


class _Ed25519Key:
    """Shared file handling of an ed25519 private key; subclasses set the file header."""

    _HEADER: ClassVar[bytes]
    _WHAT: ClassVar[str]

    __slots__ = ("_public", "_signing")

    def __init__(self, signing: nacl.signing.SigningKey) -> None:
        self._signing = signing
        self._public = bytes(signing.verify_key)

    @classmethod
    def generate(cls) -> Self:
        """A fresh key from the OS CSPRNG."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Self:
        """A key from its 32-byte seed (tests and restore only)."""
        if len(seed) != _SEED_BYTES:
            raise ValueError(f"seed: must be {_SEED_BYTES} bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        """The 64-byte detached ed25519 signature of `data`."""
        return self._signing.sign(data).signature

    def __repr__(self) -> str:  # never print the seed
        return f"{type(self).__name__}(public={short_hash(self._public)})"

    # -- files ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        """Write the key to `path` with mode 0600, atomically (temp file + fsync + rename).

        Raises:
            AlreadyExistsError: `path` exists and force is False (nothing is changed).
            IdentityError: the directory cannot be written.
        """
        data = self._HEADER + b"\n" + base64.b64encode(bytes(self._signing)) + b"\n"
        write_file_atomic(path, data, mode=0o600, force=force, what=self._WHAT)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a key written by save().

        Raises:
            IdentityError: the file is missing, unreadable, readable by group/others, or not a
                key of this kind (the message names the file and what to do).
        """
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise IdentityError(f"{cls._WHAT} {p} does not exist (run `aiosd init`)") from None
        except OSError as e:
            raise IdentityError(f"{cls._WHAT} {p} cannot be read: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IdentityError(f"{cls._WHAT} {p} is not a regular file")
            if st.st_mode & 0o077:
                raise IdentityError(
                    f"{cls._WHAT} {p} is readable by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {p}`"
                )
            raw = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
        finally:
            os.close(fd)
        lines = raw.split(b"\n")
        if len(raw) > _MAX_KEY_FILE_BYTES or len(lines) < 2 or lines[0] != cls._HEADER:
            raise IdentityError(f"{cls._WHAT} {p} is corrupt or not a {cls._WHAT}")
        try:
            seed = base64.b64decode(lines[1], validate=True)
        except (binascii.Error, ValueError):
            raise IdentityError(f"{cls._WHAT} {p} is corrupt (bad base64)") from None
        if len(seed) != _SEED_BYTES or any(line.strip() for line in lines[2:]):
            raise IdentityError(f"{cls._WHAT} {p} is corrupt (wrong length)")
        return cls.from_seed(seed)


class NodeKey(_Ed25519Key):
    """A node's identity key; `node_id` is the short hash of its public key."""

    _HEADER = b"aiosd-node-key-v1"
    _WHAT = "node key"
    __slots__ = ()

    @property
    def node_id(self) -> NodeId:
        return node_id_of(self._public)

    def box_private(self) -> nacl.public.PrivateKey:
        """The X25519 private key derived from this ed25519 key (for seal_box/open_box)."""
        sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(bytes(self._signing) + self._public)
        return nacl.public.PrivateKey(sk)


class CaKey(_Ed25519Key):
    """The network CA key; it signs node certificates. `network_id` names the network."""

    _HEADER = b"aiosd-ca-key-v1"
    _WHAT = "CA key"
    __slots__ = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self._public)

    @property
    def network_id(self) -> str:
        return network_id_of(self._public)


def _box(key: NodeKey, peer_public: bytes) -> nacl.public.Box:
    if len(peer_public) != PUBLIC_KEY_BYTES:
        raise ValueError(f"peer_public: must be {PUBLIC_KEY_BYTES} bytes")
    try:
        peer_x = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(peer_public)
    except nacl.exceptions.RuntimeError as e:  # not a point on the curve
        raise ValueError("peer_public: not a valid ed25519 public key") from e
    return nacl.public.Box(key.box_private(), nacl.public.PublicKey(peer_x))


def seal_box(key: NodeKey, peer_public: bytes, plaintext: bytes) -> bytes:
    """Encrypt and authenticate `plaintext` for the node whose ed25519 key is `peer_public`.

    X25519 keys are derived from both nodes' ed25519 keys (XSalsa20-Poly1305, random nonce
    prefixed); only the peer can open it and it proves it came from `key`.
    """
    return bytes(_box(key, peer_public).encrypt(plaintext))


def open_box(key: NodeKey, peer_public: bytes, ciphertext: bytes) -> bytes:
    """Decrypt a seal_box() from the node with `peer_public`.

    Raises:
        AuthError: the ciphertext was tampered with, truncated or not sealed for us by that peer.
    """
    try:
        return bytes(_box(key, peer_public).decrypt(ciphertext))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise AuthError(AuthReason.BAD_SIGNATURE, "box: cannot be opened") from e


def write_file_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int, force: bool, what: str
) -> None:
    """Write `data` to `path` atomically (temp file + fsync + rename/link + dir fsync).

    Raises:
        AlreadyExistsError: `path` exists and force is False (nothing is changed).
        IdentityError: the directory cannot be written.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise IdentityError(f"{what} {p}: cannot write in {p.parent}: {e.strerror}") from e
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)  # atomic create-if-absent: never overwrites
            except FileExistsError:
                raise AlreadyExistsError(
                    f"{what} {p} already exists; refusing to overwrite it (use force)"
                ) from None
            os.unlink(tmp)
        fsync_dir(p.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "CaKey",
    "NodeKey",
    "fingerprint_of",
    "network_id_of",
    "node_id_of",
    "open_box",
    "seal_box",
    "short_hash",
    "verify_signature",
    "write_file_atomic",
]
