"""Node / CA keys: files (0600, atomic, no overwrite, refusal of bad files), ids, signatures, boxes."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from federation.errors import AlreadyExistsError, AuthError, IdentityError
from federation.identity import (
    CaKey,
    NodeKey,
    fingerprint_of,
    node_id_of,
    open_box,
    seal_box,
    verify_signature,
)


def test_saved_key_loads_back_with_same_identity_and_mode_0600(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = NodeKey.load(path)
    assert loaded.public_bytes == key.public_bytes
    assert loaded.node_id == key.node_id
    assert re.fullmatch(r"[a-z2-7]{16}", key.node_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]  # no temp file left


def test_save_refuses_to_overwrite_without_force_and_leaves_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = NodeKey.generate()
    first.save(path)
    before = path.read_bytes()
    with pytest.raises(AlreadyExistsError, match="already exists"):
        NodeKey.generate().save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]
    second = NodeKey.generate()
    second.save(path, force=True)
    assert NodeKey.load(path).node_id == second.node_id != first.node_id


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match=r"node\.key does not exist"):
        NodeKey.load(tmp_path / "node.key")


def test_load_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        NodeKey.load(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"aiosd-node-key-v1\n!!!notbase64\n",
        b"aiosd-node-key-v1\nAAAA\n",  # wrong length
        b"aiosd-node-key-v1\n" + b"A" * 300,  # too big
    ],
)
def test_load_refuses_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(IdentityError, match="corrupt"):
        NodeKey.load(path)


def test_a_ca_key_file_is_not_accepted_as_a_node_key(tmp_path: Path) -> None:
    path = tmp_path / "ca.key"
    CaKey.generate().save(path)
    with pytest.raises(IdentityError, match="not a node key"):
        NodeKey.load(path)
    assert CaKey.load(path).public_bytes


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "node.key").mkdir(mode=0o700)
    with pytest.raises(IdentityError):
        NodeKey.load(tmp_path / "node.key")


def test_ca_fingerprint_and_network_id_are_hashes_of_the_public_key() -> None:
    ca = CaKey.generate()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ca.fingerprint)
    assert ca.fingerprint == fingerprint_of(ca.public_bytes)
    assert re.fullmatch(r"[a-z2-7]{16}", ca.network_id)
    assert ca.network_id != CaKey.generate().network_id


def test_signature_verifies_only_for_same_key_and_data() -> None:
    key, other = NodeKey.generate(), NodeKey.generate()
    sig = key.sign(b"hello")
    assert verify_signature(key.public_bytes, b"hello", sig)
    assert not verify_signature(key.public_bytes, b"hellO", sig)
    assert not verify_signature(other.public_bytes, b"hello", sig)
    assert not verify_signature(key.public_bytes, b"hello", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify_signature(key.public_bytes[:31], b"hello", sig)
    assert not verify_signature(key.public_bytes, b"hello", sig[:63])


def test_repr_never_shows_the_seed() -> None:
    seed = bytes(range(32))
    key = NodeKey.from_seed(seed)
    assert seed.hex() not in repr(key)
    assert key.node_id == node_id_of(key.public_bytes)
    assert NodeKey.from_seed(seed).public_bytes == key.public_bytes
    with pytest.raises(ValueError, match="seed"):
        NodeKey.from_seed(b"short")


def test_box_round_trip_only_between_the_two_nodes() -> None:
    a, b, eve = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    box = seal_box(a, b.public_bytes, b"task payload")
    assert b"task payload" not in box
    assert open_box(b, a.public_bytes, box) == b"task payload"
    with pytest.raises(AuthError):
        open_box(eve, a.public_bytes, box)
    with pytest.raises(AuthError):
        open_box(b, eve.public_bytes, box)  # wrong claimed sender
    tampered = box[:-1] + bytes([box[-1] ^ 1])
    with pytest.raises(AuthError):
        open_box(b, a.public_bytes, tampered)
    with pytest.raises(ValueError, match="peer_public"):
        seal_box(a, b"x" * 5, b"data")
