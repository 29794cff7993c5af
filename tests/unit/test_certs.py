"""Node certificates: issue, encode, verify (each rejection reason), renewal, cache, files."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.certs import (
    BACKDATE_S,
    CertCache,
    NodeCert,
    Revocation,
    RevocationSet,
    issue_cert,
    load_cert,
    needs_renewal,
    save_cert,
    verify_cert,
)
from federation.errors import AuthError, AuthReason, IdentityError
from federation.identity import CaKey, NodeKey

NOW = 1_800_000_000.0


def _issue(ca: CaKey, key: NodeKey, *, ttl_s: int = 3600, now: float = NOW) -> NodeCert:
    return issue_cert(
        ca,
        key.public_bytes,
        network_id=ca.network_id,
        cluster="default",
        roles=["member"],
        ttl_s=ttl_s,
        now=now,
    )


def _reason(exc: pytest.ExceptionInfo[AuthError]) -> AuthReason:
    return exc.value.reason


def test_issued_cert_round_trips_and_verifies() -> None:
    ca, key = CaKey.generate(), NodeKey.generate()
    cert = _issue(ca, key)
    assert cert.node_id == key.node_id
    assert cert.network_id == ca.network_id
    assert cert.not_before == NOW - BACKDATE_S
    assert cert.expires == NOW + 3600
    again = NodeCert.from_bytes(cert.to_bytes())
    assert again == cert
    verify_cert(again, ca.public_bytes, NOW, revoked=set())


def test_cert_from_another_ca_is_unknown_ca() -> None:
    ca, other = CaKey.generate(), CaKey.generate()
    cert = _issue(other, NodeKey.generate())
    with pytest.raises(AuthError) as e:
        verify_cert(cert, ca.public_bytes, NOW)
    assert _reason(e) is AuthReason.UNKNOWN_CA


def test_cert_claiming_our_network_but_signed_by_another_ca_fails_signature() -> None:
    ca, other = CaKey.generate(), CaKey.generate()
    key = NodeKey.generate()
    forged = _issue(other, key).model_copy(update={"network_id": ca.network_id})
    with pytest.raises(AuthError) as e:
        verify_cert(forged, ca.public_bytes, NOW)
    assert _reason(e) is AuthReason.BAD_CERT_SIGNATURE


@pytest.mark.parametrize(
    "field,value",
    [("cluster", "other"), ("roles", ("admin",)), ("expires", int(NOW) + 10**6), ("serial", "abcdef")],
)
def test_any_edited_field_breaks_the_ca_signature(field: str, value: object) -> None:
    ca = CaKey.generate()
    cert = _issue(ca, NodeKey.generate()).model_copy(update={field: value})
    with pytest.raises(AuthError) as e:
        verify_cert(cert, ca.public_bytes, NOW)
    assert _reason(e) is AuthReason.BAD_CERT_SIGNATURE


def test_expired_and_not_yet_valid_certs_are_refused() -> None:
    ca = CaKey.generate()
    cert = _issue(ca, NodeKey.generate(), ttl_s=60)
    verify_cert(cert, ca.public_bytes, NOW + 59)
    with pytest.raises(AuthError) as e:
        verify_cert(cert, ca.public_bytes, NOW + 60)
    assert _reason(e) is AuthReason.EXPIRED_CERT
    with pytest.raises(AuthError) as e:
        verify_cert(cert, ca.public_bytes, NOW - BACKDATE_S - 1)
    assert _reason(e) is AuthReason.CERT_NOT_YET_VALID


def test_revoked_by_node_id_or_serial() -> None:
    ca = CaKey.generate()
    cert = _issue(ca, NodeKey.generate())
    for subject, kind in [(cert.node_id, "node"), (cert.serial, "cert")]:
        revoked = RevocationSet([Revocation(subject=subject, subject_kind=kind, revoked_at=1, by="admin1")])
        with pytest.raises(AuthError) as e:
            verify_cert(cert, ca.public_bytes, NOW, revoked)
        assert _reason(e) is AuthReason.REVOKED
    verify_cert(cert, ca.public_bytes, NOW, RevocationSet())


def test_from_bytes_names_the_bad_field() -> None:
    ca = CaKey.generate()
    cert = _issue(ca, NodeKey.generate())
    bad = cert.model_dump() | {"cluster": "Bad Name!"}
    with pytest.raises(AuthError, match=r"cert\.cluster") as e:
        NodeCert.from_obj(bad)
    assert _reason(e) is AuthReason.MALFORMED
    with pytest.raises(AuthError, match="node_id"):
        NodeCert.from_obj(cert.model_dump() | {"node_id": "aaaaaaaaaaaaaaaa"})
    with pytest.raises(AuthError, match="not msgpack"):
        NodeCert.from_bytes(b"\xc1")
    with pytest.raises(AuthError, match="larger"):
        NodeCert.from_bytes(b"\x00" * 5000)


def test_issue_refuses_bad_arguments() -> None:
    ca, key = CaKey.generate(), NodeKey.generate()
    with pytest.raises(ValueError, match="network_id"):
        issue_cert(ca, key.public_bytes, network_id="other", cluster="c", roles=["member"], ttl_s=1, now=NOW)
    with pytest.raises(ValueError, match="ttl_s"):
        issue_cert(
            ca, key.public_bytes, network_id=ca.network_id, cluster="c", roles=["member"], ttl_s=0, now=NOW
        )
    with pytest.raises(ValueError, match="node_public"):
        issue_cert(ca, b"x", network_id=ca.network_id, cluster="c", roles=["member"], ttl_s=1, now=NOW)
    with pytest.raises(ValueError, match="roles"):
        issue_cert(ca, key.public_bytes, network_id=ca.network_id, cluster="c", roles=[], ttl_s=1, now=NOW)


def test_needs_renewal_after_two_thirds_of_life() -> None:
    cert = _issue(CaKey.generate(), NodeKey.generate(), ttl_s=3000)
    life = cert.expires - cert.not_before
    assert not needs_renewal(cert, cert.not_before + life * 0.66)
    assert needs_renewal(cert, cert.not_before + life * 0.67)
    assert needs_renewal(cert, cert.not_before + life * 0.5, fraction=0.5)
    with pytest.raises(ValueError, match="fraction"):
        needs_renewal(cert, NOW, fraction=0)


def test_cert_cache_skips_signature_but_still_checks_expiry_and_revocation() -> None:
    ca = CaKey.generate()
    cert = _issue(ca, NodeKey.generate(), ttl_s=60)
    cache = CertCache(ca.public_bytes, max_entries=2)
    raw = cert.to_bytes()
    assert cache.verify(raw, NOW, set()) == cert
    assert len(cache) == 1
    with pytest.raises(AuthError) as e:
        cache.verify(raw, NOW + 61, set())
    assert _reason(e) is AuthReason.EXPIRED_CERT
    with pytest.raises(AuthError) as e:
        cache.verify(raw, NOW, {cert.node_id})
    assert _reason(e) is AuthReason.REVOKED
    for _ in range(3):
        cache.verify(_issue(ca, NodeKey.generate()).to_bytes(), NOW, set())
    assert len(cache) == 2 and cache.evictions == 2
    forged = _issue(CaKey.generate(), NodeKey.generate())
    with pytest.raises(AuthError):
        cache.verify(forged.to_bytes(), NOW, set())
    assert len(cache) == 2  # a refused cert is not remembered


def test_cert_file_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    cert = _issue(CaKey.generate(), NodeKey.generate())
    path = tmp_path / "node.cert"
    save_cert(path, cert)
    assert load_cert(path) == cert
    path.write_bytes(b"\x93garbage")
    with pytest.raises(IdentityError, match="corrupt"):
        load_cert(path)
    with pytest.raises(IdentityError, match="does not exist"):
        load_cert(tmp_path / "missing.cert")
