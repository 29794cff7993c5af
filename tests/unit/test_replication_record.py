"""Records: canonical bytes, batch signatures with Merkle proofs, forwarding of subsets."""

from __future__ import annotations

import random

import msgpack  # type: ignore[import-untyped,unused-ignore]  # no stubs published
import nacl.exceptions
import nacl.signing
import pytest

from federation.replication.record import (
    Draft,
    Proof,
    Record,
    RootCache,
    Version,
    group_root,
    merkle_paths,
    proof_root,
    record_hash,
    sign_batch,
    verify_record,
    wire_size,
)
from federation.sansio import NodeId

SK = {n: nacl.signing.SigningKey.generate() for n in ("n1", "n2")}


def verify(origin: NodeId, msg: bytes, sig: bytes) -> bool:
    sk = SK.get(origin)
    if sk is None:
        return False
    try:
        sk.verify_key.verify(msg, sig)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def signer(n: str):  # type: ignore[no-untyped-def]  # small test factory
    return lambda m: SK[n].sign(m).signature


def drafts(n: int, origin: str = "n1") -> list[Draft]:
    return [
        Draft("reg", f"k{i}", f"v{i}".encode(), Version(hlc=1000 + i, origin=origin), i % 5 == 4)
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 100, 1024])
def test_every_record_of_a_batch_verifies_alone(n: int) -> None:
    recs = sign_batch(drafts(n), signer("n1"))
    roots = RootCache(verify)
    assert all(verify_record(r, roots) for r in reversed(recs))
    assert roots.verifications == 1 and roots.hits == n - 1  # one ed25519 verify per batch
    assert len({r.proof.sig for r in recs}) == 1


def test_forwarded_subset_verifies_at_a_third_node() -> None:
    recs = sign_batch(drafts(50), signer("n1"))
    fresh = RootCache(verify)  # another node, nothing cached
    assert all(verify_record(r, fresh) for r in recs[17:23])


@pytest.mark.parametrize(
    "change",
    [
        {"value": b"other"},
        {"key": "k999"},
        {"table": "nodes"},
        {"tombstone": True},
        {"version": Version(hlc=1001, origin="n1")},
        {"version": Version(hlc=1000, origin="n2")},
    ],
)
def test_any_field_changed_after_signing_fails(change: dict[str, object]) -> None:
    r = sign_batch(drafts(4), signer("n1"))[0]
    assert verify_record(r, RootCache(verify))
    assert not verify_record(r.model_copy(update=change), RootCache(verify))


def test_wrong_proof_index_or_path_fails() -> None:
    recs = sign_batch(drafts(4), signer("n1"))
    r = recs[1]
    moved = r.model_copy(update={"proof": Proof(index=2, path=r.proof.path, sig=r.proof.sig)})
    assert not verify_record(moved, RootCache(verify))
    other = r.model_copy(update={"proof": recs[2].proof})
    assert not verify_record(other, RootCache(verify))


def test_forged_origin_and_unknown_origin_fail() -> None:
    as_n1_by_n2 = sign_batch(drafts(2, origin="n1"), signer("n2"))[0]
    assert not verify_record(as_n1_by_n2, RootCache(verify))
    mallory = sign_batch(drafts(1, origin="mallory"), lambda m: b"\0" * 64)[0]
    assert not verify_record(mallory, RootCache(verify))


def test_failed_verifications_are_not_cached_and_cache_is_bounded() -> None:
    cache = RootCache(verify, max_entries=3)
    bad = sign_batch(drafts(1), signer("n2"))[0]
    assert not verify_record(bad, cache) and not verify_record(bad, cache)
    assert cache.verifications == 2 and len(cache) == 0
    for i in range(10):
        d = Draft("reg", f"x{i}", b"", Version(hlc=i, origin="n1"), True)
        assert verify_record(sign_batch([d], signer("n1"))[0], cache)
    assert len(cache) == 3
    with pytest.raises(ValueError, match="max_entries"):
        RootCache(verify, max_entries=0)


def test_batch_must_have_one_origin_and_fit_the_proof_depth() -> None:
    with pytest.raises(ValueError, match="same origin"):
        sign_batch(drafts(1, "n1") + drafts(1, "n2"), signer("n1"))
    with pytest.raises(ValueError, match="empty"):
        merkle_paths([])
    with pytest.raises(ValueError, match="at most"):
        merkle_paths([b"\0" * 32] * ((1 << 16) + 1))


def test_record_hash_ignores_the_proof_and_covers_the_rest() -> None:
    a = sign_batch(drafts(3), signer("n1"))[0]
    b = sign_batch(drafts(1), signer("n1"))[0]  # same record, another batch
    assert a.proof != b.proof and record_hash(a) == record_hash(b)
    root, paths = merkle_paths([record_hash(a)])
    assert paths == [()] and proof_root(record_hash(a), b.proof) == root


def test_wire_size_estimate_is_close_to_the_encoding() -> None:
    for r in sign_batch(drafts(300), signer("n1"))[::37]:
        exact = len(msgpack.packb(r.model_dump(), use_bin_type=True))
        assert abs(wire_size(r) - exact) <= 16, (wire_size(r), exact)


def test_record_model_rejects_bad_fields_by_name() -> None:
    r = sign_batch(drafts(1), signer("n1"))[0]
    with pytest.raises(ValueError, match="table"):
        Record.model_validate({**r.model_dump(), "table": "Bad Table"})
    with pytest.raises(ValueError, match="key"):
        Record.model_validate({**r.model_dump(), "key": ""})
    with pytest.raises(ValueError, match="sig"):
        Record.model_validate({**r.model_dump(), "proof": {"index": 0, "path": (), "sig": b"short"}})


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 100, 1024])
def test_group_root_equals_each_proof_root_for_any_subset(n: int) -> None:
    recs = sign_batch(drafts(n), lambda m: b"s" * 64)
    root, _ = merkle_paths([record_hash(r) for r in recs])
    rng = random.Random(n)
    for _ in range(10):
        sub = rng.sample(recs, rng.randint(1, n))
        assert group_root([(record_hash(r), r.proof) for r in sub]) == root


def test_group_root_refuses_inconsistent_groups() -> None:
    recs = sign_batch(drafts(8), lambda m: b"s" * 64)
    items = [(record_hash(r), r.proof) for r in recs]
    assert group_root([]) is None
    bad_path = (items[0][0], Proof(index=0, path=(b"x" * 32, *items[0][1].path[1:]), sig=b"s" * 64))
    assert group_root([bad_path, *items[1:]]) is None  # claims another value for leaf 1
    assert group_root([(b"y" * 32, items[0][1]), *items[1:]]) is None  # two leaves at index 0
    short = sign_batch(drafts(2), lambda m: b"s" * 64)[0]
    assert group_root([*items, (record_hash(short), short.proof)]) is None  # two depths


def test_check_group_verifies_once_and_fails_on_a_forged_member() -> None:
    recs = sign_batch(drafts(64), signer("n1"))
    cache = RootCache(verify)
    items = [(record_hash(r), r.proof) for r in recs]
    assert cache.check_group(NodeId("n1"), recs[0].proof.sig, items) and cache.verifications == 1
    forged = recs[5].model_copy(update={"value": b"evil"})
    items[5] = (record_hash(forged), forged.proof)
    assert not RootCache(verify).check_group(NodeId("n1"), recs[0].proof.sig, items)
    assert not RootCache(verify).check_group(NodeId("n2"), recs[0].proof.sig, items[:5])  # wrong origin
