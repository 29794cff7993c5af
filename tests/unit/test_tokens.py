"""Join tokens: string form, parsing garbage, CA pinning, proof, and every admission refusal."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.certs import pack
from federation.errors import TokenError, TokenReason
from federation.identity import CaKey, NodeKey
from federation.tokens import (
    TOKEN_PREFIX,
    JoinToken,
    TokenRecord,
    admit,
    check_ca,
    create_token,
    make_join_request,
    parse_token,
    record_from_obj,
    revoke_token,
)

NOW = 1_800_000_000.0


def _make(ca: CaKey, *, ttl_s: int = 3600, uses: int = 1) -> tuple[str, TokenRecord]:
    return create_token(
        ca.network_id, ca.fingerprint, ["127.0.0.1:7701", "seed.example:7701"], "default", ttl_s, uses, NOW
    )


def _reason(e: pytest.ExceptionInfo[TokenError]) -> TokenReason:
    return e.value.reason


def test_token_string_is_compact_and_parses_back() -> None:
    ca = CaKey.generate()
    s, record = _make(ca)
    assert s.startswith(TOKEN_PREFIX) and len(s) < 260 and s.isascii() and " " not in s
    tok = parse_token("  " + s + "\n")
    assert tok.network_id == ca.network_id
    assert tok.ca_fingerprint == ca.fingerprint
    assert tok.seeds == ("127.0.0.1:7701", "seed.example:7701")
    assert tok.token_id == record.token_id
    assert tok.expires == record.expires == NOW + 3600
    assert tok.secret.hex() not in repr(tok)
    # the stored record holds no secret, only the public verify key
    assert tok.secret not in pack(record.model_dump()) and tok.secret not in record.verify_key


@pytest.mark.parametrize(
    "garbage,match",
    [
        ("", "does not start"),
        ("hello", "does not start"),
        ("aiosd1.!!!!", "base64url"),
        ("aiosd1.é", "base64url"),
        ("aiosd1." + base64.urlsafe_b64encode(b"\xc1").decode(), "msgpack"),
        ("aiosd1." + base64.urlsafe_b64encode(b"\x93\x01\x02\x03").decode(), "layout"),
        ("aiosd1." + "A" * 5000, "longer"),
    ],
)
def test_parse_token_refuses_garbage_clearly(garbage: str, match: str) -> None:
    with pytest.raises(TokenError, match=match) as e:
        parse_token(garbage)
    assert _reason(e) is TokenReason.MALFORMED
    assert "not a valid aiosd token" in str(e.value)


def test_parse_token_names_the_bad_field() -> None:
    ca = CaKey.generate()
    s, _ = _make(ca)
    tok = parse_token(s)
    bad = tok.model_copy(update={"seeds": ("no-port",)}).to_string()
    with pytest.raises(TokenError, match=r"seeds\.0") as e:
        parse_token(bad)
    assert _reason(e) is TokenReason.MALFORMED


def test_truncated_token_is_refused() -> None:
    s, _ = _make(CaKey.generate())
    with pytest.raises(TokenError) as e:
        parse_token(s[:-10])
    assert _reason(e) is TokenReason.MALFORMED


def test_check_ca_pins_the_fingerprint() -> None:
    ca = CaKey.generate()
    tok = parse_token(_make(ca)[0])
    check_ca(tok, ca.public_bytes)
    with pytest.raises(TokenError, match="does not match") as e:
        check_ca(tok, CaKey.generate().public_bytes)
    assert _reason(e) is TokenReason.CA_MISMATCH


def test_admit_spends_one_use_and_records_the_joiner() -> None:
    ca, joiner = CaKey.generate(), NodeKey.generate()
    s, record = _make(ca, uses=2)
    req = make_join_request(parse_token(s), joiner.public_bytes, NOW + 1)
    after = admit(record, req, NOW + 2)
    assert after.uses_left == 1 and record.uses_left == 2  # input unchanged
    assert after.used_by == (joiner.node_id,)
    after2 = admit(after, make_join_request(parse_token(s), joiner.public_bytes, NOW + 3), NOW + 3)
    assert after2.uses_left == 0
    with pytest.raises(TokenError) as e:
        admit(after2, make_join_request(parse_token(s), joiner.public_bytes, NOW + 4), NOW + 4)
    assert _reason(e) is TokenReason.USED_UP
    assert "no uses left" in str(e.value)


def test_expired_token_is_refused() -> None:
    ca = CaKey.generate()
    s, record = _make(ca, ttl_s=60)
    req = make_join_request(parse_token(s), NodeKey.generate().public_bytes, NOW + 60)
    with pytest.raises(TokenError, match="expired") as e:
        admit(record, req, NOW + 60)
    assert _reason(e) is TokenReason.EXPIRED


def test_wrong_secret_is_refused() -> None:
    ca = CaKey.generate()
    s, record = _make(ca)
    tok = parse_token(s)
    forged = tok.model_copy(update={"secret": bytes(32)})
    with pytest.raises(TokenError) as e:
        admit(record, make_join_request(forged, NodeKey.generate().public_bytes, NOW), NOW)
    assert _reason(e) is TokenReason.WRONG_SECRET


def test_proof_is_bound_to_the_joiners_key() -> None:
    ca = CaKey.generate()
    s, record = _make(ca)
    req = make_join_request(parse_token(s), NodeKey.generate().public_bytes, NOW)
    stolen = req.model_copy(update={"node_public": NodeKey.generate().public_bytes})
    with pytest.raises(TokenError) as e:
        admit(record, stolen, NOW)
    assert _reason(e) is TokenReason.WRONG_SECRET


def test_stale_proof_is_refused() -> None:
    ca = CaKey.generate()
    s, record = _make(ca)
    req = make_join_request(parse_token(s), NodeKey.generate().public_bytes, NOW)
    with pytest.raises(TokenError, match="skew") as e:
        admit(record, req, NOW + 301)
    assert _reason(e) is TokenReason.WRONG_SECRET


def test_revoked_token_is_refused_by_flag_or_list() -> None:
    ca = CaKey.generate()
    s, record = _make(ca)
    req = make_join_request(parse_token(s), NodeKey.generate().public_bytes, NOW)
    with pytest.raises(TokenError) as e:
        admit(revoke_token(record), req, NOW)
    assert _reason(e) is TokenReason.REVOKED
    with pytest.raises(TokenError) as e:
        admit(record, req, NOW, revoked={record.token_id})
    assert _reason(e) is TokenReason.REVOKED


def test_request_for_another_token_or_network_is_refused() -> None:
    ca = CaKey.generate()
    s1, record1 = _make(ca)
    s2, _ = _make(ca)
    req2 = make_join_request(parse_token(s2), NodeKey.generate().public_bytes, NOW)
    with pytest.raises(TokenError) as e:
        admit(record1, req2, NOW)
    assert _reason(e) is TokenReason.UNKNOWN_TOKEN
    req1 = make_join_request(parse_token(s1), NodeKey.generate().public_bytes, NOW)
    with pytest.raises(TokenError) as e:
        admit(record1, req1.model_copy(update={"network_id": "othernet"}), NOW)
    assert _reason(e) is TokenReason.NETWORK_MISMATCH


def test_create_token_refuses_bad_arguments() -> None:
    ca = CaKey.generate()
    with pytest.raises(ValueError, match="ttl_s"):
        create_token(ca.network_id, ca.fingerprint, [], "default", 0, 1, NOW)
    with pytest.raises(ValueError, match="uses"):
        create_token(ca.network_id, ca.fingerprint, [], "default", 60, 0, NOW)
    with pytest.raises(ValueError, match="seeds"):
        create_token(ca.network_id, ca.fingerprint, ["nope"], "default", 60, 1, NOW)
    with pytest.raises(ValueError, match="ca_fingerprint"):
        create_token(ca.network_id, "md5:abc", [], "default", 60, 1, NOW)


def test_record_round_trips_through_storage_form() -> None:
    _, record = _make(CaKey.generate())
    assert record_from_obj(record.model_dump()) == record
    with pytest.raises(TokenError, match="uses_left") as e:
        record_from_obj(record.model_dump() | {"uses_left": -1})
    assert _reason(e) is TokenReason.MALFORMED


def test_join_token_model_is_strict() -> None:
    with pytest.raises(ValueError):
        JoinToken.model_validate({"network_id": "x"})


_VALID = create_token("net1", "sha256:" + "ab" * 32, ["127.0.0.1:7701"], "default", 60, 1, NOW)[0]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda i, c: _VALID[:i] + c + _VALID[i + 1 :], st.integers(0, len(_VALID) - 1), st.characters()
        ),
    )
)
def test_parse_token_raises_only_token_error(s: str) -> None:
    try:
        tok = parse_token(s)
    except TokenError as e:
        assert e.reason is TokenReason.MALFORMED
    else:
        assert tok.to_string() == s.strip() or parse_token(tok.to_string()) == tok
